// libsae/sae.hpp: the C++ interface of libsae (header-only, C++17; std::span
// overloads in C++20). Everything in libsae/sae.h is reachable from here:
//
//   sae::model, sae::optimizer  RAII owners of sae_model * and sae_optimizer *
//                               (move-only). They adopt a raw handle made
//                               through the C API (explicit constructor) and
//                               give one up (release()); handle() is const on
//                               a const object.
//   sae::error                  what every failing call throws: status(),
//                               code(), function(), detail() and the library's
//                               messages (sae_status_string, sae_error_detail);
//                               one subclass per status
//                               (sae::invalid_arg_error, sae::format_error, ...)
//   sae::status, sae::arch, sae::tensor, sae::option, sae::kernel,
//   sae::gemm, sae::precision, sae::lr_schedule, sae::b_dec_init,
//   sae::option_flags
//                               scoped enums with the C values; every call
//                               also takes the C constants (SAE_OPT_LR, ...)
//   sae::rng                    the library's random number generator
//   sae::checkpoint_writer      a crash-safe checkpoint directory's next
//                               generation (commit, or abort when destroyed);
//                               also sae::checkpoint_begin/commit/abort/current
//   free functions              version, status strings, error detail, the
//                               option table (option_name, option_default,
//                               bounds), gemm_backend, input scale,
//                               total variance
//
// Buffers are caller-owned floats, row-major, as in sae.h: each call that
// takes one has a pointer + count overload (n_tokens rows), a std::vector
// overload (rows = size / width; a ragged size throws invalid_arg_error) and,
// in C++20, a std::span overload. Calls that return a buffer return a
// std::vector.
//
//     sae::model m(768, 16384, /*seed*/ 1, sae::arch::topk, /*k*/ 32);
//     sae::optimizer opt(m);
//     opt.set(sae::option::lr, 4e-4).set(sae::option::lr_schedule, sae::lr_schedule::cosine);
//     sae_losses l = opt.step(m, batch);            // batch: n x 768 floats
//     std::vector<float> f = m.encode(batch);       // n x 16384
//     m.save("run");                                // SAELens opens the directory
//
// Installed with the library; find_package(sae) / pkg-config sae put it on the
// include path. Link with the library as for sae.h (sae::sae, -lsae).
#ifndef LIBSAE_SAE_HPP_INCLUDED
#define LIBSAE_SAE_HPP_INCLUDED

#include <libsae/sae.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if __cplusplus >= 202002L && defined(__has_include)
#  if __has_include(<span>)
#    include <span>
#    define LIBSAE_HPP_SPAN 1
#  endif
#endif

namespace sae {

// ---------------------------------------------------------------------------
// Enums: the values of sae.h, scoped.
// ---------------------------------------------------------------------------

enum class status : int {
    ok = SAE_OK,
    invalid_arg = SAE_E_INVALID_ARG,
    nomem = SAE_E_NOMEM,
    nonfinite = SAE_E_NONFINITE,
    io = SAE_E_IO,
    format = SAE_E_FORMAT,
    state = SAE_E_STATE,
    comm = SAE_E_COMM,
};

enum class tensor : int {
    w_enc = SAE_W_ENC,         // d_in x d_sae
    b_enc = SAE_B_ENC,         // d_sae
    w_dec = SAE_W_DEC,         // d_sae x d_in
    b_dec = SAE_B_DEC,         // d_in
    threshold = SAE_THRESHOLD, // JumpReLU: d_sae; BatchTopK, Matryoshka: 1; others: none
    w_skip = SAE_W_SKIP,       // skip transcoders: d_out x d_in
    b_mag = SAE_B_MAG,         // Gated: d_sae
    r_mag = SAE_R_MAG,         // Gated: d_sae
};

enum class arch : int {
    relu = SAE_ARCH_RELU,
    topk = SAE_ARCH_TOPK,
    batchtopk = SAE_ARCH_BATCHTOPK,
    jumprelu = SAE_ARCH_JUMPRELU,
    gated = SAE_ARCH_GATED,
    matryoshka = SAE_ARCH_MATRYOSHKA,
};

enum class model_kind : int {
    autoencoder = SAE_KIND_AUTOENCODER,
    transcoder = SAE_KIND_TRANSCODER,
    skip_transcoder = SAE_KIND_SKIP_TRANSCODER,
};

// The modes of optimizer::set_comm (distributed training).
enum class parallel : int {
    data = SAE_PARALLEL_DATA,         // every rank the whole model, a share of the batch
    features = SAE_PARALLEL_FEATURES, // every rank a shard of the features, the whole batch
};

enum class option : int {
    lr = SAE_OPT_LR,
    beta1 = SAE_OPT_BETA1,
    beta2 = SAE_OPT_BETA2,
    eps = SAE_OPT_EPS,
    l1_coeff = SAE_OPT_L1_COEFF,
    grad_clip = SAE_OPT_GRAD_CLIP,
    threads = SAE_OPT_THREADS,
    kernel = SAE_OPT_KERNEL,
    total_steps = SAE_OPT_TOTAL_STEPS,
    l1_warmup_fraction = SAE_OPT_L1_WARMUP_FRACTION,
    lr_warmup_steps = SAE_OPT_LR_WARMUP_STEPS,
    lr_decay_fraction = SAE_OPT_LR_DECAY_FRACTION,
    lr_schedule = SAE_OPT_LR_SCHEDULE,
    auxk_coeff = SAE_OPT_AUXK_COEFF,
    auxk_k = SAE_OPT_AUXK_K,
    dead_window = SAE_OPT_DEAD_WINDOW,
    jumprelu_bandwidth = SAE_OPT_JUMPRELU_BANDWIDTH,
    threshold_beta = SAE_OPT_THRESHOLD_BETA,
    gemm = SAE_OPT_GEMM,
    precision = SAE_OPT_PRECISION,
};

enum class kernel : int {
    automatic = SAE_KERNEL_AUTO, // "auto" is a keyword
    dense = SAE_KERNEL_DENSE,
    sparse = SAE_KERNEL_SPARSE,
};

enum class gemm : int {
    automatic = SAE_GEMM_AUTO, // "auto" is a keyword
    cblas = SAE_GEMM_CBLAS,
    onednn = SAE_GEMM_ONEDNN,
};

enum class precision : int {
    fp32 = SAE_PRECISION_FP32,
    bf16 = SAE_PRECISION_BF16,
};

enum class lr_schedule : int {
    constant = SAE_LR_CONSTANT,
    linear = SAE_LR_LINEAR,
    cosine = SAE_LR_COSINE,
};

enum class b_dec_init : int {
    mean = SAE_B_DEC_MEAN,
    geometric_median = SAE_B_DEC_GEOMETRIC_MEDIAN,
};

// Flags of sae::option_bounds (sae_option_bounds).
enum class option_flags : unsigned {
    lower_open = SAE_OPTION_LOWER_OPEN, // the lower bound itself is not allowed
    upper_open = SAE_OPTION_UPPER_OPEN, // the upper bound itself is not allowed
    whole = SAE_OPTION_WHOLE,           // whole numbers only
};

// An enum argument given either as the scoped enum (sae::option::lr) or as the
// C constant (SAE_OPT_LR).
template <class Scoped, class CEnum> class enum_arg {
public:
    constexpr enum_arg(Scoped v) noexcept : value_(static_cast<int>(v)) {}
    constexpr enum_arg(CEnum v) noexcept : value_(static_cast<int>(v)) {}
    constexpr int value() const noexcept { return value_; }
    constexpr Scoped get() const noexcept { return static_cast<Scoped>(value_); }

private:
    int value_;
};
using option_arg = enum_arg<option, sae_option>;
using tensor_arg = enum_arg<tensor, sae_tensor>;
using arch_arg = enum_arg<arch, sae_arch>;
using b_dec_init_arg = enum_arg<b_dec_init, sae_b_dec_init>;

// The losses of a batch (sae.h's frozen struct: loss, l2, l1, l0).
using losses = sae_losses;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

// A failed libsae call. what() is "<function>: <sae_status_string>", then
// ": <detail>" when the library said why (sae_error_detail, read on the
// thread that failed, when the exception was made).
class error : public std::runtime_error {
public:
    error(int code, const char *function)
        : error(code, function, sae_error_detail())
    {
    }
    error(int code, const char *function, const std::string &detail)
        : std::runtime_error(std::string(function) + ": " + sae_status_string(code) +
                             (detail.empty() ? "" : ": " + detail)),
          code_(code), function_(function), detail_(detail)
    {
    }
    sae::status status() const noexcept { return static_cast<sae::status>(code_); }
    int code() const noexcept { return code_; }
    const char *function() const noexcept { return function_; }
    // Why it failed, naming the argument, option, key, tensor or file ("" if
    // the library gave no detail).
    const std::string &detail() const noexcept { return detail_; }

private:
    int code_;
    const char *function_; // a string literal: the C function's name
    std::string detail_;
};

// One class per status, so that callers can catch the kinds they handle.
#define LIBSAE_HPP_ERROR(name)                                                         \
    class name : public error {                                                        \
    public:                                                                            \
        using error::error;                                                            \
    };
LIBSAE_HPP_ERROR(invalid_arg_error) // SAE_E_INVALID_ARG
LIBSAE_HPP_ERROR(nomem_error)       // SAE_E_NOMEM
LIBSAE_HPP_ERROR(nonfinite_error)   // SAE_E_NONFINITE
LIBSAE_HPP_ERROR(io_error)          // SAE_E_IO
LIBSAE_HPP_ERROR(format_error)      // SAE_E_FORMAT
LIBSAE_HPP_ERROR(state_error)       // SAE_E_STATE
LIBSAE_HPP_ERROR(comm_error)        // SAE_E_COMM: a sae_comm function failed
#undef LIBSAE_HPP_ERROR

// Throw the exception of `code` (a negative SAE_E_*) from `function`.
[[noreturn]] inline void throw_error(int code, const char *function)
{
    switch (code) {
    case SAE_E_INVALID_ARG: throw invalid_arg_error(code, function);
    case SAE_E_NOMEM: throw nomem_error(code, function);
    case SAE_E_NONFINITE: throw nonfinite_error(code, function);
    case SAE_E_IO: throw io_error(code, function);
    case SAE_E_FORMAT: throw format_error(code, function);
    case SAE_E_STATE: throw state_error(code, function);
    case SAE_E_COMM: throw comm_error(code, function);
    default: throw error(code, function); // a status newer than this header
    }
}

// Throw unless code is SAE_OK.
inline void check(int code, const char *function)
{
    if (code != SAE_OK)
        throw_error(code, function);
}

// ---------------------------------------------------------------------------
// Version, status strings
// ---------------------------------------------------------------------------

inline unsigned version_number() noexcept { return sae_version_number(); }
inline const char *version_string() noexcept { return sae_version_string(); }
inline const char *status_string(int code) noexcept { return sae_status_string(code); }
inline const char *status_string(sae::status s) noexcept
{
    return sae_status_string(static_cast<int>(s));
}

// Why the calling thread's last failing libsae call failed ("" before any).
inline const char *error_detail() noexcept { return sae_error_detail(); }

// The option table (sae_option_name, _default, _bounds).
inline const char *option_name(option_arg opt) noexcept { return sae_option_name(opt.value()); }
inline double option_default(option_arg opt)
{
    double v = 0;
    check(sae_option_default(opt.value(), &v), "sae_option_default");
    return v;
}
struct option_bounds {
    double lower = 0, upper = 0; // finite; DBL_MAX where there is no limit
    unsigned flags = 0;          // sae::option_flags bits
    bool has(option_flags f) const noexcept { return (flags & static_cast<unsigned>(f)) != 0; }
    // Whether sae_optimizer_set accepts value.
    bool allows(double value) const noexcept
    {
        if (!(value >= lower && value <= upper)) // also false for NaN
            return false;
        if ((has(option_flags::lower_open) && value == lower) ||
            (has(option_flags::upper_open) && value == upper))
            return false;
        return !has(option_flags::whole) || std::trunc(value) == value;
    }
};
inline option_bounds bounds(option_arg opt)
{
    option_bounds b;
    check(sae_option_bounds(opt.value(), &b.lower, &b.upper, &b.flags), "sae_option_bounds");
    return b;
}

// The backend a value of SAE_OPT_GEMM runs on in this build of the library
// (sae::gemm::cblas or sae::gemm::onednn; sae_gemm_backend).
inline sae::gemm gemm_backend(sae::gemm requested)
{
    int backend = sae_gemm_backend(static_cast<int>(requested));
    check(backend < 0 ? backend : SAE_OK, "sae_gemm_backend");
    return static_cast<sae::gemm>(backend);
}

// The library's random number generator (sae_rng_*): the same bits as the
// library and every other caller draw from the same seed and stream. Plain
// data: copy it to fork the stream.
class rng {
public:
    explicit rng(std::uint64_t seed = 0, std::uint64_t stream = 0) noexcept
    {
        sae_rng_seed(&r_, seed, stream);
    }
    std::uint64_t next() noexcept { return sae_rng_next(&r_); }
    double uniform() noexcept { return sae_rng_uniform(&r_); }
    double normal() noexcept { return sae_rng_normal(&r_); }
    std::uint64_t below(std::uint64_t n) noexcept { return sae_rng_below(&r_, n); }
    void shuffle(std::uint64_t *v, std::size_t n)
    {
        check(sae_rng_shuffle(&r_, v, n), "sae_rng_shuffle");
    }
    void shuffle(std::vector<std::uint64_t> &v) { shuffle(v.data(), v.size()); }
    sae_rng &state() noexcept { return r_; }
    const sae_rng &state() const noexcept { return r_; }

private:
    sae_rng r_;
};

namespace detail {
// What sae::model and sae::optimizer share: move-only ownership of a T *,
// freed with Free (which accepts NULL).
template <class T, void (*Free)(T *)> class owner {
public:
    explicit owner(T *owned = nullptr) noexcept : p_(owned) {}
    owner(owner &&other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
    owner &operator=(owner &&other) noexcept
    {
        if (this != &other)
            reset(std::exchange(other.p_, nullptr));
        return *this;
    }
    owner(const owner &) = delete;
    owner &operator=(const owner &) = delete;
    ~owner() { Free(p_); }

    // The C handle, still owned by this object.
    T *handle() noexcept { return p_; }
    const T *handle() const noexcept { return p_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }
    // Give up ownership: the caller frees the returned handle.
    T *release() noexcept { return std::exchange(p_, nullptr); }
    // Free the current handle and own `owned` instead.
    void reset(T *owned = nullptr) noexcept { Free(std::exchange(p_, owned)); }

protected:
    T *p_;
};

// The whole safetensors encoding of a model or optimizer.
template <class T> std::vector<unsigned char> encoding(const T &object)
{
    std::vector<unsigned char> buf(object.save_size());
    buf.resize(object.save_buffer(buf.data(), buf.size()));
    return buf;
}

// Rows of a buffer of `count` floats with `width` columns; ragged throws.
inline std::size_t rows_of(std::size_t count, std::size_t width, const char *function)
{
    if (width == 0 || count % width != 0)
        throw invalid_arg_error(SAE_E_INVALID_ARG, function,
                                std::to_string(count) + " floats are not whole rows of " +
                                    std::to_string(width));
    return count / width;
}
// The rows of x (x_count floats of width x_width) and of the target y, which
// must be as many.
inline std::size_t paired_rows(std::size_t x_count, std::size_t x_width, std::size_t y_count,
                               std::size_t y_width, const char *function)
{
    std::size_t n = rows_of(x_count, x_width, function);
    if (rows_of(y_count, y_width, function) != n)
        throw invalid_arg_error(SAE_E_INVALID_ARG, function,
                                "x has " + std::to_string(n) + " rows, y " +
                                    std::to_string(y_count / y_width));
    return n;
}
} // namespace detail

// s with E ||s x||^2 = d_in over the sample x (n_tokens x d_in floats).
inline double estimate_input_scale(const float *x, std::size_t n_tokens, std::size_t d_in)
{
    double s = 0;
    check(sae_estimate_input_scale(x, n_tokens, d_in, &s), "sae_estimate_input_scale");
    return s;
}
inline double estimate_input_scale(const std::vector<float> &x, std::size_t d_in)
{
    return estimate_input_scale(x.data(), detail::rows_of(x.size(), d_in,
                                                          "sae_estimate_input_scale"), d_in);
}
#ifdef LIBSAE_HPP_SPAN
inline double estimate_input_scale(std::span<const float> x, std::size_t d_in)
{
    return estimate_input_scale(x.data(), detail::rows_of(x.size(), d_in,
                                                          "sae_estimate_input_scale"), d_in);
}
#endif

// The mean over tokens of ||x_t - mean(x)||^2 of x (n_tokens x d floats):
// the FVU's denominator per token; mean (d doubles) receives x's mean, or
// nullptr (sae_total_variance).
inline double total_variance(const float *x, std::size_t n_tokens, std::size_t d,
                             double *mean = nullptr)
{
    double v = 0;
    check(sae_total_variance(x, n_tokens, d, mean, &v), "sae_total_variance");
    return v;
}
inline double total_variance(const std::vector<float> &x, std::size_t d)
{
    return total_variance(x.data(), detail::rows_of(x.size(), d, "sae_total_variance"), d);
}
#ifdef LIBSAE_HPP_SPAN
inline double total_variance(std::span<const float> x, std::size_t d)
{
    return total_variance(x.data(), detail::rows_of(x.size(), d, "sae_total_variance"), d);
}
#endif

// The log10 feature-density histogram of a batch (model::density_histogram).
struct density_histogram {
    std::vector<std::uint64_t> counts; // n_bins live features per density bin
    std::size_t n_dead = 0;            // features that fired on no token
};

// Features [begin, end) of d_sae_total (model::shard, shard_range).
struct shard_span {
    std::size_t begin = 0, end = 0, d_sae_total = 0;
};

// The even split of d_sae features into n_shards: shard s's range
// (sae_shard_range).
inline shard_span shard_range(std::size_t d_sae, int n_shards, int shard)
{
    shard_span r;
    check(sae_shard_range(d_sae, n_shards, shard, &r.begin, &r.end), "sae_shard_range");
    r.d_sae_total = d_sae;
    return r;
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

class model : public detail::owner<sae_model, sae_model_free> {
public:
    // A ReLU SAE (sae_model_create).
    model(std::size_t d_in, std::size_t d_sae, std::uint64_t seed)
    {
        check(sae_model_create(&p_, d_in, d_sae, seed), "sae_model_create");
    }
    // Architecture `a` with its parameter: k for TopK/BatchTopK, the initial
    // threshold for JumpReLU, 0 for ReLU (sae_model_create_arch).
    model(std::size_t d_in, std::size_t d_sae, std::uint64_t seed, arch_arg a, double param)
    {
        check(sae_model_create_arch(&p_, d_in, d_sae, seed, a.value(), param),
              "sae_model_create_arch");
    }
    // Adopt a model made through the C API; it is freed with this object.
    explicit model(sae_model *owned) noexcept : owner(owned) {}

    // Features [begin, end) of the model the constructor above would make:
    // exactly its slice (sae_model_create_shard).
    static model create_shard(std::size_t d_in, std::size_t d_sae, std::size_t begin,
                              std::size_t end, std::uint64_t seed, arch_arg a, double param)
    {
        sae_model *m = nullptr;
        check(sae_model_create_shard(&m, d_in, d_sae, begin, end, seed, a.value(), param),
              "sae_model_create_shard");
        return model(m);
    }
    // Features [begin, end) of the transcoder model::transcoder would make:
    // exactly its slice, b_dec and W_skip whole (sae_model_create_transcoder_shard).
    static model transcoder_shard(std::size_t d_in, std::size_t d_out, std::size_t d_sae,
                                  std::size_t begin, std::size_t end, std::uint64_t seed,
                                  sae::model_kind kind, arch_arg a, double param)
    {
        sae_model *m = nullptr;
        check(sae_model_create_transcoder_shard(&m, d_in, d_out, d_sae, begin, end, seed,
                                                static_cast<int>(kind), a.value(), param),
              "sae_model_create_transcoder_shard");
        return model(m);
    }
    // Features [begin, end) of the model model::matryoshka would make: exactly
    // its slice, with the whole model's widths (sae_model_create_matryoshka_shard).
    static model matryoshka_shard(std::size_t d_in, std::size_t d_sae, std::size_t begin,
                                  std::size_t end, std::uint64_t seed, std::size_t k,
                                  const std::vector<std::size_t> &widths)
    {
        sae_model *m = nullptr;
        check(sae_model_create_matryoshka_shard(&m, d_in, d_sae, begin, end, seed, k,
                                                widths.empty() ? nullptr : widths.data(),
                                                widths.size()),
              "sae_model_create_matryoshka_shard");
        return model(m);
    }
    // Features [begin, end) of a saved model (sae_model_load_shard).
    static model load_shard(const char *path, std::size_t begin, std::size_t end)
    {
        sae_model *m = nullptr;
        check(sae_model_load_shard(&m, path, begin, end), "sae_model_load_shard");
        return model(m);
    }
    static model load_shard(const std::string &path, std::size_t begin, std::size_t end)
    {
        return load_shard(path.c_str(), begin, end);
    }
    // The features this model holds (a whole model: [0, d_sae) of d_sae).
    shard_span shard() const
    {
        shard_span r;
        check(sae_model_shard(p_, &r.begin, &r.end, &r.d_sae_total), "sae_model_shard");
        return r;
    }
    // Save with every rank of comm (sae_model_save_collective).
    void save_collective(const sae_comm &comm, const char *path) const
    {
        check(sae_model_save_collective(p_, &comm, path), "sae_model_save_collective");
    }
    void save_collective(const sae_comm &comm, const std::string &path) const
    {
        save_collective(comm, path.c_str());
    }

    // An independent deep copy, every tensor and the architecture's state bit
    // for bit (sae_model_clone).
    model clone() const
    {
        sae_model *m = nullptr;
        check(sae_model_clone(&m, p_), "sae_model_clone");
        return model(m);
    }

    // From a safetensors file or a checkpoint directory (sae_model_load).
    static model load(const char *path)
    {
        sae_model *m = nullptr;
        check(sae_model_load(&m, path), "sae_model_load");
        return model(m);
    }
    static model load(const std::string &path) { return load(path.c_str()); }
    // From safetensors bytes (sae_model_load_buffer).
    static model load_buffer(const void *buf, std::size_t size)
    {
        sae_model *m = nullptr;
        check(sae_model_load_buffer(&m, buf, size), "sae_model_load_buffer");
        return model(m);
    }
    static model load_buffer(const std::vector<unsigned char> &buf)
    {
        return load_buffer(buf.data(), buf.size());
    }

    std::size_t d_in() const noexcept { return sae_model_d_in(p_); }
    std::size_t d_sae() const noexcept { return sae_model_d_sae(p_); }
    sae::arch architecture() const noexcept { return static_cast<sae::arch>(sae_model_arch(p_)); }
    std::size_t k() const noexcept { return sae_model_k(p_); }
    std::size_t d_out() const noexcept { return sae_model_d_out(p_); }
    sae::model_kind kind() const noexcept
    {
        return static_cast<sae::model_kind>(sae_model_kind(p_));
    }

    // A Matryoshka BatchTopK SAE with level widths (sae_model_create_matryoshka).
    static model matryoshka(std::size_t d_in, std::size_t d_sae, std::uint64_t seed, std::size_t k,
                            const std::vector<std::size_t> &widths)
    {
        sae_model *m = nullptr;
        check(sae_model_create_matryoshka(&m, d_in, d_sae, seed, k,
                                          widths.empty() ? nullptr : widths.data(), widths.size()),
              "sae_model_create_matryoshka");
        return model(m);
    }
    // Its level widths, the last d_sae; empty for other architectures.
    std::vector<std::size_t> matryoshka_widths() const
    {
        std::vector<std::size_t> w(sae_model_matryoshka_levels(p_));
        if (!w.empty())
            check(sae_model_matryoshka_widths(p_, w.data(), w.size()),
                  "sae_model_matryoshka_widths");
        return w;
    }
    // A transcoder x (d_in) -> y (d_out) of kind transcoder or skip_transcoder,
    // activation `a` with its parameter (sae_model_create_transcoder).
    static model transcoder(std::size_t d_in, std::size_t d_out, std::size_t d_sae,
                            std::uint64_t seed, sae::model_kind kind, arch_arg a, double param)
    {
        sae_model *m = nullptr;
        check(sae_model_create_transcoder(&m, d_in, d_out, d_sae, seed, static_cast<int>(kind),
                                          a.value(), param),
              "sae_model_create_transcoder");
        return model(m);
    }
    // The initialisation drawn again, decoder rows of norm decoder_init_norm
    // (sae_model_reinit).
    void reinit(std::uint64_t seed, double decoder_init_norm)
    {
        check(sae_model_reinit(p_, seed, decoder_init_norm), "sae_model_reinit");
    }
    std::size_t tensor_size(tensor_arg which) const noexcept
    {
        return sae_model_tensor_size(p_, which.value());
    }

    // Tensors, in SAELens's layout (sae.h, "Model").
    void get(tensor_arg which, float *dst, std::size_t count) const
    {
        check(sae_model_get_tensor(p_, which.value(), dst, count), "sae_model_get_tensor");
    }
    std::vector<float> get(tensor_arg which) const
    {
        std::vector<float> out(tensor_size(which));
        if (!out.empty())
            get(which, out.data(), out.size());
        return out;
    }
    void set(tensor_arg which, const float *src, std::size_t count)
    {
        check(sae_model_set_tensor(p_, which.value(), src, count), "sae_model_set_tensor");
    }
    void set(tensor_arg which, const std::vector<float> &src) { set(which, src.data(), src.size()); }

    // f (n_tokens x d_sae) of x (n_tokens x d_in), by the inference activation.
    void encode(const float *x, std::size_t n_tokens, float *f) const
    {
        check(sae_encode(p_, x, n_tokens, f), "sae_encode");
    }
    std::vector<float> encode(const std::vector<float> &x) const
    {
        return encode_rows(x.data(), x.size());
    }
    // x_hat (n_tokens x d_in) of f (n_tokens x d_sae).
    void decode(const float *f, std::size_t n_tokens, float *x_hat) const
    {
        check(sae_decode(p_, f, n_tokens, x_hat), "sae_decode");
    }
    std::vector<float> decode(const std::vector<float> &f) const
    {
        return decode_rows(f.data(), f.size());
    }
    // The losses of batch x with L1 coefficient lambda, changing nothing.
    losses loss(const float *x, std::size_t n_tokens, double lambda) const
    {
        losses l{};
        check(sae_loss(p_, x, n_tokens, lambda, &l), "sae_loss");
        return l;
    }
    losses loss(const std::vector<float> &x, double lambda) const
    {
        return loss(x.data(), rows(x.size(), d_in(), "sae_loss"), lambda);
    }
    // Fraction of variance unexplained on x (at least 2 rows).
    double fvu(const float *x, std::size_t n_tokens) const
    {
        double v = 0;
        check(sae_fvu(p_, x, n_tokens, &v), "sae_fvu");
        return v;
    }
    double fvu(const std::vector<float> &x) const
    {
        return fvu(x.data(), rows(x.size(), d_in(), "sae_fvu"));
    }

    // The model's output (n_tokens x d_out) for inputs x (n_tokens x d_in): an
    // autoencoder's reconstruction, a transcoder's y_hat with its skip term.
    void output(const float *x, std::size_t n_tokens, float *out) const
    {
        check(sae_output(p_, x, n_tokens, out), "sae_output");
    }
    std::vector<float> output(const std::vector<float> &x) const
    {
        std::size_t n = rows(x.size(), d_in(), "sae_output");
        std::vector<float> out(n * d_out());
        output(x.data(), n, out.data());
        return out;
    }
    // A Matryoshka model's l2 at each level (sae_loss_levels): one per width.
    std::vector<double> loss_levels(const float *x, std::size_t n_tokens) const
    {
        std::vector<double> l2(sae_model_matryoshka_levels(p_));
        check(sae_loss_levels(p_, x, n_tokens, l2.data(), l2.size()), "sae_loss_levels");
        return l2;
    }
    std::vector<double> loss_levels(const std::vector<float> &x) const
    {
        return loss_levels(x.data(), rows(x.size(), d_in(), "sae_loss_levels"));
    }
    // loss and fvu against a target y (n_tokens x d_out), e.g. a transcoder's.
    losses loss_target(const float *x, const float *y, std::size_t n_tokens, double lambda) const
    {
        losses l{};
        check(sae_loss_target(p_, x, y, n_tokens, lambda, &l), "sae_loss_target");
        return l;
    }
    losses loss_target(const std::vector<float> &x, const std::vector<float> &y,
                       double lambda) const
    {
        return loss_target(x.data(), y.data(),
                           detail::paired_rows(x.size(), d_in(), y.size(), d_out(),
                                               "sae_loss_target"),
                           lambda);
    }
    double fvu_target(const float *x, const float *y, std::size_t n_tokens) const
    {
        double v = 0;
        check(sae_fvu_target(p_, x, y, n_tokens, &v), "sae_fvu_target");
        return v;
    }
    double fvu_target(const std::vector<float> &x, const std::vector<float> &y) const
    {
        return fvu_target(x.data(), y.data(),
                          detail::paired_rows(x.size(), d_in(), y.size(), d_out(),
                                              "sae_fvu_target"));
    }

    // Checkpoints: an existing directory gets sae_weights.safetensors and
    // cfg.json (SAELens opens it), any other path one safetensors file.
    void save(const char *path) const { check(sae_model_save(p_, path), "sae_model_save"); }
    void save(const std::string &path) const { save(path.c_str()); }
    std::size_t save_size() const
    {
        std::size_t n = 0;
        check(sae_model_save_size(p_, &n), "sae_model_save_size");
        return n;
    }
    std::size_t save_buffer(void *buf, std::size_t capacity) const
    {
        std::size_t written = 0;
        check(sae_model_save_buffer(p_, buf, capacity, &written), "sae_model_save_buffer");
        return written;
    }
    std::vector<unsigned char> save_buffer() const { return detail::encoding(*this); }

    // The training recipe (sae.h, "Training recipe").
    void fold_input_scale(double scale)
    {
        check(sae_model_fold_input_scale(p_, scale), "sae_model_fold_input_scale");
    }
    void init_b_dec(const float *x, std::size_t n_tokens, b_dec_init_arg method)
    {
        check(sae_model_init_b_dec(p_, x, n_tokens, method.value()), "sae_model_init_b_dec");
    }
    void init_b_dec(const std::vector<float> &x, b_dec_init_arg method)
    {
        init_b_dec(x.data(), rows(x.size(), d_in(), "sae_model_init_b_dec"), method);
    }
    sae::density_histogram density_histogram(const float *x, std::size_t n_tokens,
                                             double log10_min, double log10_max,
                                             std::size_t n_bins) const
    {
        sae::density_histogram h;
        h.counts.resize(n_bins);
        check(sae_feature_density_histogram(p_, x, n_tokens, log10_min, log10_max, n_bins,
                                            h.counts.data(), &h.n_dead),
              "sae_feature_density_histogram");
        return h;
    }
    sae::density_histogram density_histogram(const std::vector<float> &x, double log10_min,
                                             double log10_max, std::size_t n_bins) const
    {
        return density_histogram(x.data(),
                                 rows(x.size(), d_in(), "sae_feature_density_histogram"),
                                 log10_min, log10_max, n_bins);
    }

    // counts[i] += tokens of x on which feature i fires (count = d_sae), over
    // a stream of batches (sae_feature_fire_counts).
    void feature_fire_counts(const float *x, std::size_t n_tokens, std::uint64_t *counts,
                             std::size_t count) const
    {
        check(sae_feature_fire_counts(p_, x, n_tokens, counts, count), "sae_feature_fire_counts");
    }
    void feature_fire_counts(const std::vector<float> &x, std::vector<std::uint64_t> &counts) const
    {
        feature_fire_counts(x.data(), rows(x.size(), d_in(), "sae_feature_fire_counts"),
                            counts.data(), counts.size());
    }

#ifdef LIBSAE_HPP_SPAN
    void set(tensor_arg which, std::span<const float> src) { set(which, src.data(), src.size()); }
    void get(tensor_arg which, std::span<float> dst) const { get(which, dst.data(), dst.size()); }
    std::vector<float> encode(std::span<const float> x) const
    {
        return encode_rows(x.data(), x.size());
    }
    std::vector<float> decode(std::span<const float> f) const
    {
        return decode_rows(f.data(), f.size());
    }
    losses loss(std::span<const float> x, double lambda) const
    {
        return loss(x.data(), rows(x.size(), d_in(), "sae_loss"), lambda);
    }
    double fvu(std::span<const float> x) const
    {
        return fvu(x.data(), rows(x.size(), d_in(), "sae_fvu"));
    }
    void init_b_dec(std::span<const float> x, b_dec_init_arg method)
    {
        init_b_dec(x.data(), rows(x.size(), d_in(), "sae_model_init_b_dec"), method);
    }
    std::size_t save_buffer(std::span<unsigned char> buf) const
    {
        return save_buffer(buf.data(), buf.size());
    }
    static model load_buffer(std::span<const unsigned char> buf)
    {
        return load_buffer(buf.data(), buf.size());
    }
#endif

private:
    static std::size_t rows(std::size_t count, std::size_t width, const char *function)
    {
        return detail::rows_of(count, width, function);
    }
    std::vector<float> encode_rows(const float *x, std::size_t count) const
    {
        std::size_t n = rows(count, d_in(), "sae_encode");
        std::vector<float> f(n * d_sae());
        encode(x, n, f.data());
        return f;
    }
    std::vector<float> decode_rows(const float *f, std::size_t count) const
    {
        std::size_t n = rows(count, d_sae(), "sae_decode");
        std::vector<float> x_hat(n * d_in());
        decode(f, n, x_hat.data());
        return x_hat;
    }
};

// ---------------------------------------------------------------------------
// Optimizer and training step
// ---------------------------------------------------------------------------

class optimizer : public detail::owner<sae_optimizer, sae_optimizer_free> {
public:
    // Adam with default options for models shaped like m (sae_optimizer_create).
    explicit optimizer(const model &m)
    {
        check(sae_optimizer_create(&p_, m.handle()), "sae_optimizer_create");
    }
    // Adopt an optimizer made through the C API.
    explicit optimizer(sae_optimizer *owned) noexcept : owner(owned) {}

    // From a file or a directory holding optimizer.safetensors (sae_optimizer_load).
    static optimizer load(const model &m, const char *path)
    {
        sae_optimizer *o = nullptr;
        check(sae_optimizer_load(&o, m.handle(), path), "sae_optimizer_load");
        return optimizer(o);
    }
    static optimizer load(const model &m, const std::string &path)
    {
        return load(m, path.c_str());
    }
    static optimizer load_buffer(const model &m, const void *buf, std::size_t size)
    {
        sae_optimizer *o = nullptr;
        check(sae_optimizer_load_buffer(&o, m.handle(), buf, size), "sae_optimizer_load_buffer");
        return optimizer(o);
    }
    static optimizer load_buffer(const model &m, const std::vector<unsigned char> &buf)
    {
        return load_buffer(m, buf.data(), buf.size());
    }

    // Options (sae.h, "Optimizer and training step"); set returns *this to chain.
    optimizer &set(option_arg opt, double value)
    {
        check(sae_optimizer_set(p_, opt.value(), value), "sae_optimizer_set");
        return *this;
    }
    optimizer &set(option_arg opt, sae::kernel value)
    {
        return set(opt, static_cast<double>(static_cast<int>(value)));
    }
    optimizer &set(option_arg opt, sae::lr_schedule value)
    {
        return set(opt, static_cast<double>(static_cast<int>(value)));
    }
    optimizer &set(option_arg opt, sae::gemm value)
    {
        return set(opt, static_cast<double>(static_cast<int>(value)));
    }
    optimizer &set(option_arg opt, sae::precision value)
    {
        return set(opt, static_cast<double>(static_cast<int>(value)));
    }
    double get(option_arg opt) const
    {
        double v = 0;
        check(sae_optimizer_get(p_, opt.value(), &v), "sae_optimizer_get");
        return v;
    }
    std::uint64_t steps() const noexcept { return sae_optimizer_steps(p_); }
    double lr_at(std::uint64_t step) const
    {
        double v = 0;
        check(sae_optimizer_lr_at(p_, step, &v), "sae_optimizer_lr_at");
        return v;
    }
    double l1_coeff_at(std::uint64_t step) const
    {
        double v = 0;
        check(sae_optimizer_l1_coeff_at(p_, step, &v), "sae_optimizer_l1_coeff_at");
        return v;
    }

    // One training step on x (n_tokens x d_in floats); the losses before the update.
    losses step(model &m, const float *x, std::size_t n_tokens)
    {
        losses l{};
        check(sae_step(m.handle(), p_, x, n_tokens, &l), "sae_step");
        return l;
    }
    losses step(model &m, const std::vector<float> &x)
    {
        return step(m, x.data(), detail::rows_of(x.size(), m.d_in(), "sae_step"));
    }
    // One training step on x (n_tokens x d_in) against the target y (n_tokens x
    // d_out): how transcoders train.
    losses step_target(model &m, const float *x, const float *y, std::size_t n_tokens)
    {
        losses l{};
        check(sae_step_target(m.handle(), p_, x, y, n_tokens, &l), "sae_step_target");
        return l;
    }
    losses step_target(model &m, const std::vector<float> &x, const std::vector<float> &y)
    {
        return step_target(m, x.data(), y.data(),
                           detail::paired_rows(x.size(), m.d_in(), y.size(), m.d_out(),
                                               "sae_step_target"));
    }
#ifdef LIBSAE_HPP_SPAN
    losses step(model &m, std::span<const float> x)
    {
        return step(m, x.data(), detail::rows_of(x.size(), m.d_in(), "sae_step"));
    }
#endif

    // Feature activity: training tokens since each feature fired (count = d_sae).
    void tokens_since_fired(std::uint64_t *dst, std::size_t count) const
    {
        check(sae_optimizer_tokens_since_fired(p_, dst, count), "sae_optimizer_tokens_since_fired");
    }
    std::vector<std::uint64_t> tokens_since_fired(std::size_t d_sae) const
    {
        std::vector<std::uint64_t> out(d_sae);
        tokens_since_fired(out.data(), out.size());
        return out;
    }
    std::size_t dead_count(std::uint64_t window_tokens) const
    {
        std::size_t n = 0;
        check(sae_optimizer_dead_count(p_, window_tokens, &n), "sae_optimizer_dead_count");
        return n;
    }
    // The dead features' indices, ascending.
    std::vector<std::size_t> dead_features(std::uint64_t window_tokens) const
    {
        std::size_t total = 0;
        check(sae_optimizer_dead_features(p_, window_tokens, nullptr, 0, &total),
              "sae_optimizer_dead_features");
        std::vector<std::size_t> idx(total);
        if (total)
            check(sae_optimizer_dead_features(p_, window_tokens, idx.data(), idx.size(), &total),
                  "sae_optimizer_dead_features");
        idx.resize(total);
        return idx;
    }
    // Resample the features dead for window_tokens from the inputs x; the
    // number resampled (sae_resample_dead).
    std::size_t resample_dead(model &m, const float *x, std::size_t n_tokens,
                              std::uint64_t window_tokens, std::uint64_t seed)
    {
        std::size_t n = 0;
        check(sae_resample_dead(m.handle(), p_, x, n_tokens, window_tokens, seed, &n),
              "sae_resample_dead");
        return n;
    }
    std::size_t resample_dead(model &m, const std::vector<float> &x, std::uint64_t window_tokens,
                              std::uint64_t seed)
    {
        return resample_dead(m, x.data(), detail::rows_of(x.size(), m.d_in(), "sae_resample_dead"),
                             window_tokens, seed);
    }

    // Distributed training: attach comm for mode (copied; its ctx must outlive
    // the attachment), or detach with nullptr (sae_optimizer_set_comm).
    optimizer &set_comm(parallel mode, const sae_comm *comm)
    {
        check(sae_optimizer_set_comm(p_, static_cast<int>(mode), comm), "sae_optimizer_set_comm");
        return *this;
    }
    // Save with every rank of comm (sae_optimizer_save_collective).
    void save_collective(const sae_comm &comm, const char *path) const
    {
        check(sae_optimizer_save_collective(p_, &comm, path), "sae_optimizer_save_collective");
    }
    void save_collective(const sae_comm &comm, const std::string &path) const
    {
        save_collective(comm, path.c_str());
    }
    // The run's checkpoint (m's files and this optimizer's) into the existing
    // directory dir, through the attached communicators; every rank calls it
    // (sae_checkpoint_save_collective).
    void save_checkpoint_collective(const model &m, const char *dir) const
    {
        check(sae_checkpoint_save_collective(m.handle(), p_, dir),
              "sae_checkpoint_save_collective");
    }
    void save_checkpoint_collective(const model &m, const std::string &dir) const
    {
        save_checkpoint_collective(m, dir.c_str());
    }

    // Checkpoints: a file, or optimizer.safetensors in an existing directory.
    void save(const char *path) const { check(sae_optimizer_save(p_, path), "sae_optimizer_save"); }
    void save(const std::string &path) const { save(path.c_str()); }
    std::size_t save_size() const
    {
        std::size_t n = 0;
        check(sae_optimizer_save_size(p_, &n), "sae_optimizer_save_size");
        return n;
    }
    std::size_t save_buffer(void *buf, std::size_t capacity) const
    {
        std::size_t written = 0;
        check(sae_optimizer_save_buffer(p_, buf, capacity, &written), "sae_optimizer_save_buffer");
        return written;
    }
    std::vector<unsigned char> save_buffer() const { return detail::encoding(*this); }
};

// ---------------------------------------------------------------------------
// Checkpoint directories: a training run's checkpoints, crash-safe
// ---------------------------------------------------------------------------
//
//     std::string stage = sae::checkpoint_begin("run");   // "run/gen-8"
//     m.save(stage); o.save(stage);
//     sae::checkpoint_commit("run", stage);                // atomic
//     sae::model m2 = sae::model::load(sae::checkpoint_current("run"));
//
// (on an exception between begin and commit, sae::checkpoint_abort("run",
// stage) leaves "run" as it was).

namespace detail {
// strlen(dir) + 32 bytes always hold what begin and current write.
inline std::string checkpoint_path(int (*fn)(const char *, char *, std::size_t),
                                   const std::string &dir, const char *name)
{
    std::string out(dir.size() + 32, '\0');
    check(fn(dir.c_str(), &out[0], out.size()), name);
    out.resize(out.find('\0'));
    return out;
}
} // namespace detail

// Start a new generation; returns the empty staging directory (sae_checkpoint_begin).
inline std::string checkpoint_begin(const std::string &dir)
{
    return detail::checkpoint_path(sae_checkpoint_begin, dir, "sae_checkpoint_begin");
}

// Make stage the current generation, atomically (sae_checkpoint_commit).
inline void checkpoint_commit(const std::string &dir, const std::string &stage)
{
    check(sae_checkpoint_commit(dir.c_str(), stage.c_str()), "sae_checkpoint_commit");
}

// Remove the staging directory after a failed write (sae_checkpoint_abort).
inline void checkpoint_abort(const std::string &dir, const std::string &stage)
{
    check(sae_checkpoint_abort(dir.c_str(), stage.c_str()), "sae_checkpoint_abort");
}

// The directory of the current checkpoint: dir/gen-<n>, or dir for a flat
// directory from before (sae_checkpoint_current).
inline std::string checkpoint_current(const std::string &dir)
{
    return detail::checkpoint_path(sae_checkpoint_current, dir, "sae_checkpoint_current");
}

// The same as an object: begin on construction, commit(), and abort when
// destroyed uncommitted (an exception between begin and commit, say).
//
//     sae::checkpoint_writer ckpt("run");
//     m.save(ckpt.path());
//     opt.save(ckpt.path());
//     ckpt.commit();
class checkpoint_writer {
public:
    explicit checkpoint_writer(std::string dir)
        : dir_(std::move(dir)), stage_(checkpoint_begin(dir_))
    {
    }
    checkpoint_writer(const checkpoint_writer &) = delete;
    checkpoint_writer &operator=(const checkpoint_writer &) = delete;
    ~checkpoint_writer()
    {
        if (!stage_.empty())
            (void)sae_checkpoint_abort(dir_.c_str(), stage_.c_str());
    }

    // The staging directory to write the generation's files into ("" once
    // committed or aborted).
    const std::string &path() const noexcept { return stage_; }
    void commit()
    {
        checkpoint_commit(dir_, stage_);
        stage_.clear();
    }
    void abort()
    {
        if (!stage_.empty())
            checkpoint_abort(dir_, std::exchange(stage_, std::string()));
    }

private:
    std::string dir_, stage_;
};

// ---------------------------------------------------------------------------
// What the features do: sparse codes, feature statistics over a stream,
// decoder neighbours (sae.h, "Sparse codes", "Feature statistics over a
// stream", "Decoder neighbours")
// ---------------------------------------------------------------------------

// Sparse codes in CSR form: row t's active features are
// features[offsets[t] .. offsets[t + 1]) (ascending) with values[...].
struct sparse_codes {
    std::vector<std::size_t> offsets; // n_tokens + 1
    std::vector<std::uint32_t> features;
    std::vector<float> values;
};

// The active (feature, value) pairs of each row of x (n_tokens x d_in), the
// values m.encode gives bit for bit; max_per_token > 0 keeps each row's
// largest values only (sae_encode_sparse; sized by sae_encode_sparse_size
// unless the cap bounds the pairs).
inline sparse_codes encode_sparse(const model &m, const float *x, std::size_t n_tokens,
                                  std::size_t max_per_token = 0)
{
    std::size_t capacity = 0;
    if (max_per_token)
        capacity = n_tokens * (max_per_token < m.d_sae() ? max_per_token : m.d_sae());
    else
        check(sae_encode_sparse_size(m.handle(), x, n_tokens, 0, &capacity),
              "sae_encode_sparse_size");
    sparse_codes c;
    c.offsets.resize(n_tokens + 1);
    c.features.resize(capacity);
    c.values.resize(capacity);
    std::size_t done = 0;
    check(sae_encode_sparse(m.handle(), x, n_tokens, max_per_token, c.offsets.data(),
                            capacity ? c.features.data() : nullptr,
                            capacity ? c.values.data() : nullptr, capacity, &done),
          "sae_encode_sparse");
    c.features.resize(c.offsets[done]);
    c.values.resize(c.offsets[done]);
    return c;
}
inline sparse_codes encode_sparse(const model &m, const std::vector<float> &x,
                                  std::size_t max_per_token = 0)
{
    return encode_sparse(m, x.data(), detail::rows_of(x.size(), m.d_in(), "sae_encode_sparse"),
                         max_per_token);
}

// Each feature's k nearest features by decoder cosine, itself excluded:
// idx[i * k + r] and cosine[i * k + r], best first (sae_decoder_neighbors).
struct neighbors {
    std::size_t k = 0;
    std::vector<std::uint32_t> idx;   // d_sae x k
    std::vector<float> cosine;        // d_sae x k
};
inline neighbors decoder_neighbors(const model &m, std::size_t k)
{
    neighbors n;
    n.k = k;
    n.idx.resize(m.d_sae() * k);
    n.cosine.resize(m.d_sae() * k);
    check(sae_decoder_neighbors(m.handle(), k, n.idx.data(), n.cosine.data(), n.idx.size()),
          "sae_decoder_neighbors");
    return n;
}

// For each row of a (n_a x d floats), its largest cosine with a row of b
// (n_b x d) and that row, the lowest on ties (sae_max_cosine); the mean of
// cosine is the mean max cosine similarity (MMCS) of a against b, e.g. the
// true directions against m.get(sae::tensor::w_dec).
struct max_cosines {
    std::vector<float> cosine;      // n_a
    std::vector<std::uint32_t> idx; // n_a
};
inline max_cosines max_cosine(const float *a, std::size_t n_a, const float *b, std::size_t n_b,
                              std::size_t d)
{
    max_cosines r;
    r.cosine.resize(n_a);
    r.idx.resize(n_a);
    check(sae_max_cosine(a, n_a, b, n_b, d, r.cosine.data(), r.idx.data()), "sae_max_cosine");
    return r;
}
inline max_cosines max_cosine(const std::vector<float> &a, const std::vector<float> &b,
                              std::size_t d)
{
    return max_cosine(a.data(), detail::rows_of(a.size(), d, "sae_max_cosine"), b.data(),
                      detail::rows_of(b.size(), d, "sae_max_cosine"), d);
}
#ifdef LIBSAE_HPP_SPAN
inline max_cosines max_cosine(std::span<const float> a, std::span<const float> b, std::size_t d)
{
    return max_cosine(a.data(), detail::rows_of(a.size(), d, "sae_max_cosine"), b.data(),
                      detail::rows_of(b.size(), d, "sae_max_cosine"), d);
}
#endif

// Per-feature statistics over a stream of rows (sae_feature_stats): firing
// counts, exact sums, maxima, log-spaced histograms and top-N rows; merge
// accumulators over disjoint rows; save and load them.
class feature_stats : public detail::owner<sae_feature_stats, sae_feature_stats_free> {
public:
    feature_stats(std::size_t d_sae, std::size_t top_n = 20, std::size_t n_bins = 60,
                  double log10_min = -4.0, double log10_max = 2.0)
    {
        check(sae_feature_stats_create(&p_, d_sae, top_n, n_bins, log10_min, log10_max),
              "sae_feature_stats_create");
    }
    explicit feature_stats(sae_feature_stats *owned) noexcept : owner(owned) {}

    static feature_stats load(const char *path)
    {
        sae_feature_stats *s = nullptr;
        check(sae_feature_stats_load(&s, path), "sae_feature_stats_load");
        return feature_stats(s);
    }
    static feature_stats load(const std::string &path) { return load(path.c_str()); }
    static feature_stats load_buffer(const void *buf, std::size_t size)
    {
        sae_feature_stats *s = nullptr;
        check(sae_feature_stats_load_buffer(&s, buf, size), "sae_feature_stats_load_buffer");
        return feature_stats(s);
    }
    static feature_stats load_buffer(const std::vector<unsigned char> &buf)
    {
        return load_buffer(buf.data(), buf.size());
    }

    // Feeding rows: x (n_tokens x d_in) encoded by m, or sparse codes.
    void add(const model &m, const float *x, std::size_t n_tokens)
    {
        check(sae_feature_stats_add(p_, m.handle(), x, n_tokens), "sae_feature_stats_add");
    }
    void add(const model &m, const std::vector<float> &x)
    {
        add(m, x.data(), detail::rows_of(x.size(), m.d_in(), "sae_feature_stats_add"));
    }
    void add_sparse(std::size_t n_tokens, const std::size_t *offsets,
                    const std::uint32_t *features, const float *values)
    {
        check(sae_feature_stats_add_sparse(p_, n_tokens, offsets, features, values),
              "sae_feature_stats_add_sparse");
    }
    void add_sparse(const sparse_codes &c)
    {
        if (c.offsets.size() < 2)
            throw_error(SAE_E_INVALID_ARG, "sae_feature_stats_add_sparse");
        add_sparse(c.offsets.size() - 1, c.offsets.data(), c.features.data(), c.values.data());
    }
    // Merge other, over rows disjoint from this one's, into this one.
    void merge(const feature_stats &other)
    {
        check(sae_feature_stats_merge(p_, other.p_), "sae_feature_stats_merge");
    }

    std::size_t d_sae() const noexcept { return sae_feature_stats_d_sae(p_); }
    std::size_t top_n() const noexcept { return sae_feature_stats_top_n(p_); }
    std::size_t bins() const noexcept { return sae_feature_stats_bins(p_); }
    std::uint64_t rows() const noexcept { return sae_feature_stats_rows(p_); }
    std::uint64_t next_row() const noexcept { return sae_feature_stats_next_row(p_); }
    void set_next_row(std::uint64_t row)
    {
        check(sae_feature_stats_set_next_row(p_, row), "sae_feature_stats_set_next_row");
    }

    std::vector<double> bin_edges() const
    {
        std::vector<double> e(bins() + 1);
        check(sae_feature_stats_bin_edges(p_, e.data(), e.size()), "sae_feature_stats_bin_edges");
        return e;
    }
    std::vector<std::uint64_t> counts() const
    {
        std::vector<std::uint64_t> c(d_sae());
        check(sae_feature_stats_counts(p_, c.data(), c.size()), "sae_feature_stats_counts");
        return c;
    }
    // {sum, sum of squares} of each feature's activations where it fires.
    std::pair<std::vector<double>, std::vector<double>> sums() const
    {
        std::pair<std::vector<double>, std::vector<double>> s{std::vector<double>(d_sae()),
                                                              std::vector<double>(d_sae())};
        check(sae_feature_stats_sums(p_, s.first.data(), s.second.data(), d_sae()),
              "sae_feature_stats_sums");
        return s;
    }
    std::vector<float> max() const
    {
        std::vector<float> m(d_sae());
        check(sae_feature_stats_max(p_, m.data(), m.size()), "sae_feature_stats_max");
        return m;
    }
    // d_sae x bins counts, row-major.
    std::vector<std::uint64_t> histogram() const
    {
        std::vector<std::uint64_t> h(d_sae() * bins());
        check(sae_feature_stats_histogram(p_, h.data(), h.size()), "sae_feature_stats_histogram");
        return h;
    }
    // A feature's top rows: row ids and values, the largest value first.
    struct top_rows {
        std::vector<std::uint64_t> rows;
        std::vector<float> values;
    };
    top_rows top(std::size_t feature) const
    {
        top_rows t{std::vector<std::uint64_t>(top_n()), std::vector<float>(top_n())};
        std::size_t n = 0;
        check(sae_feature_stats_top(p_, feature, t.rows.data(), t.values.data(), t.rows.size(), &n),
              "sae_feature_stats_top");
        t.rows.resize(n);
        t.values.resize(n);
        return t;
    }

    // Saving: a file, or feature_stats.safetensors in an existing directory.
    void save(const char *path) const
    {
        check(sae_feature_stats_save(p_, path), "sae_feature_stats_save");
    }
    void save(const std::string &path) const { save(path.c_str()); }
    std::size_t save_size() const
    {
        std::size_t n = 0;
        check(sae_feature_stats_save_size(p_, &n), "sae_feature_stats_save_size");
        return n;
    }
    std::size_t save_buffer(void *buf, std::size_t capacity) const
    {
        std::size_t written = 0;
        check(sae_feature_stats_save_buffer(p_, buf, capacity, &written),
              "sae_feature_stats_save_buffer");
        return written;
    }
    std::vector<unsigned char> save_buffer() const { return detail::encoding(*this); }
};

} // namespace sae

#undef LIBSAE_HPP_SPAN

#endif // LIBSAE_SAE_HPP_INCLUDED
