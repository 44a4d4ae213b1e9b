// sae.hpp: a header-only C++17 wrapper for libsae.
//
// sae::model and sae::optimizer own their C handles (move-only, freed by
// their destructors through std::unique_ptr custom deleters); every failing
// call throws sae::error, which carries the libsae status code and its
// sae_status_string(). No dependency beyond the C library and the standard
// library.
//
//     sae::model m(d_in, d_sae, /*seed*/ 42);
//     sae::optimizer opt(m);
//     opt.set(SAE_OPT_LR, 1e-3).set(SAE_OPT_L1_COEFF, 0.1);
//     sae_losses l = opt.step(m, batch);          // batch: n x d_in floats
//     std::vector<float> w_dec = m.get(SAE_W_DEC); // d_sae x d_in
#ifndef LIBSAE_SAE_HPP
#define LIBSAE_SAE_HPP

#include <libsae/sae.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sae {

// A failed libsae call: status() is the SAE_E_* code, what() names the call
// and gives sae_status_string(status).
class error : public std::runtime_error {
public:
    error(int status, const char *call)
        : std::runtime_error(std::string(call) + ": " + sae_status_string(status)), status_(status)
    {
    }
    int status() const noexcept { return status_; }

private:
    int status_;
};

namespace detail {
inline void check(int status, const char *call)
{
    if (status != SAE_OK)
        throw error(status, call);
}
struct model_deleter {
    void operator()(sae_model *m) const noexcept { sae_model_free(m); }
};
struct optimizer_deleter {
    void operator()(sae_optimizer *o) const noexcept { sae_optimizer_free(o); }
};
// n_tokens of a batch of floats with `width` columns; throws if it is ragged.
inline std::size_t rows_of(const std::vector<float> &x, std::size_t width)
{
    if (width == 0 || x.size() % width != 0)
        throw error(SAE_E_INVALID_ARG, "batch size is not a multiple of the row width");
    return x.size() / width;
}
} // namespace detail

class model {
public:
    model(std::size_t d_in, std::size_t d_sae, std::uint64_t seed)
    {
        sae_model *m = nullptr;
        detail::check(sae_model_create(&m, d_in, d_sae, seed), "sae_model_create");
        handle_.reset(m);
    }

    std::size_t d_in() const noexcept { return sae_model_d_in(handle()); }
    std::size_t d_sae() const noexcept { return sae_model_d_sae(handle()); }

    // A copy of tensor `which` (SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC).
    std::vector<float> get(int which) const
    {
        std::vector<float> out(sae_model_tensor_size(handle(), which));
        detail::check(sae_model_get_tensor(handle(), which, out.data(), out.size()),
                      "sae_model_get_tensor");
        return out;
    }
    void set(int which, const std::vector<float> &values)
    {
        detail::check(sae_model_set_tensor(handle(), which, values.data(), values.size()),
                      "sae_model_set_tensor");
    }

    // x: n x d_in floats, row-major. Returns f: n x d_sae.
    std::vector<float> encode(const std::vector<float> &x) const
    {
        std::size_t n = detail::rows_of(x, d_in());
        std::vector<float> f(n * d_sae());
        detail::check(sae_encode(handle(), x.data(), n, f.data()), "sae_encode");
        return f;
    }
    // f: n x d_sae floats. Returns x_hat: n x d_in.
    std::vector<float> decode(const std::vector<float> &f) const
    {
        std::size_t n = detail::rows_of(f, d_sae());
        std::vector<float> x_hat(n * d_in());
        detail::check(sae_decode(handle(), f.data(), n, x_hat.data()), "sae_decode");
        return x_hat;
    }
    sae_losses loss(const std::vector<float> &x, double lambda) const
    {
        sae_losses l;
        detail::check(sae_loss(handle(), x.data(), detail::rows_of(x, d_in()), lambda, &l), "sae_loss");
        return l;
    }
    double fvu(const std::vector<float> &x) const
    {
        double v;
        detail::check(sae_fvu(handle(), x.data(), detail::rows_of(x, d_in()), &v), "sae_fvu");
        return v;
    }

    sae_model *handle() const noexcept { return handle_.get(); }

private:
    std::unique_ptr<sae_model, detail::model_deleter> handle_;
};

class optimizer {
public:
    explicit optimizer(const model &m)
    {
        sae_optimizer *o = nullptr;
        detail::check(sae_optimizer_create(&o, m.handle()), "sae_optimizer_create");
        handle_.reset(o);
    }

    // option: SAE_OPT_LR, SAE_OPT_L1_COEFF, ... Returns *this to chain.
    optimizer &set(int option, double value)
    {
        detail::check(sae_optimizer_set(handle(), option, value), "sae_optimizer_set");
        return *this;
    }
    double get(int option) const
    {
        double v;
        detail::check(sae_optimizer_get(handle(), option, &v), "sae_optimizer_get");
        return v;
    }

    // One training step on x (n x d_in floats); the losses before the update.
    sae_losses step(model &m, const float *x, std::size_t n_tokens)
    {
        sae_losses l;
        detail::check(sae_step(m.handle(), handle(), x, n_tokens, &l), "sae_step");
        return l;
    }
    sae_losses step(model &m, const std::vector<float> &x)
    {
        return step(m, x.data(), detail::rows_of(x, m.d_in()));
    }

    std::uint64_t steps() const noexcept { return sae_optimizer_steps(handle()); }
    // Features silent for the last window_tokens training tokens.
    std::size_t dead_count(std::uint64_t window_tokens) const
    {
        std::size_t n;
        detail::check(sae_optimizer_dead_count(handle(), window_tokens, &n), "sae_optimizer_dead_count");
        return n;
    }

    sae_optimizer *handle() const noexcept { return handle_.get(); }

private:
    std::unique_ptr<sae_optimizer, detail::optimizer_deleter> handle_;
};

} // namespace sae

#endif
