// Tests of include/libsae/sae.hpp: every wrapper against the C call it wraps
// (same bits), errors as the right exception with the handles unchanged,
// ownership (adopt, release, move), const-correctness at compile time, and the
// C++20 span overloads when compiled as C++20. Built and run by
// tests/cpp/run.sh with g++ and clang++, at C++17 and C++20.
#include "expect.hpp"

#include <libsae/sae.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>
#include <unistd.h>

namespace {

// Compile-time promises.
static_assert(!std::is_copy_constructible_v<sae::model> && !std::is_copy_assignable_v<sae::model>);
static_assert(std::is_nothrow_move_constructible_v<sae::model> &&
              std::is_nothrow_move_assignable_v<sae::optimizer>);
static_assert(std::is_same_v<decltype(std::declval<const sae::model &>().handle()),
                             const sae_model *>);
static_assert(std::is_same_v<decltype(std::declval<sae::model &>().handle()), sae_model *>);
static_assert(std::is_same_v<decltype(std::declval<const sae::optimizer &>().handle()),
                             const sae_optimizer *>);
static_assert(std::is_base_of_v<sae::error, sae::format_error> &&
              std::is_base_of_v<std::runtime_error, sae::error>);
static_assert(static_cast<int>(sae::option::threshold_beta) == SAE_OPT_THRESHOLD_BETA);
static_assert(static_cast<int>(sae::status::state) == SAE_E_STATE);

// The same x for every test: n x d rows of a fixed pattern.
std::vector<float> batch(std::size_t n, std::size_t d, int salt)
{
    std::vector<float> x(n * d);
    for (std::size_t i = 0; i < x.size(); i++)
        x[i] = static_cast<float>(static_cast<int>((i * 7 + static_cast<std::size_t>(salt) * 13) % 23) - 11) / 8.0f;
    return x;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const std::size_t d_in = 8, d_sae = 24, n = 32;

void test_model_against_c()
{
    sae::model m(d_in, d_sae, 7);
    sae_model *raw = nullptr;
    EXPECT(sae_model_create(&raw, d_in, d_sae, 7) == SAE_OK);
    EXPECT(m.d_in() == d_in && m.d_sae() == d_sae && m.architecture() == sae::arch::relu);
    EXPECT(m.k() == 0 && m.tensor_size(sae::tensor::w_enc) == d_in * d_sae);
    EXPECT(m.tensor_size(SAE_THRESHOLD) == 0 && m.get(sae::tensor::threshold).empty());

    const std::vector<float> x = batch(n, d_in, 1);
    std::vector<float> f_c(n * d_sae), xh_c(n * d_in);
    EXPECT(sae_encode(raw, x.data(), n, f_c.data()) == SAE_OK);
    EXPECT(sae_decode(raw, f_c.data(), n, xh_c.data()) == SAE_OK);
    const std::vector<float> f = m.encode(x);
    EXPECT(same_bits(f, f_c));
    EXPECT(same_bits(m.decode(f), xh_c));

    // Features by hand in double: f = ReLU((x - b_dec) W_enc + b_enc).
    const std::vector<float> w_enc = m.get(sae::tensor::w_enc), b_enc = m.get(SAE_B_ENC);
    const std::vector<float> b_dec = m.get(sae::tensor::b_dec);
    double worst = 0;
    for (std::size_t t = 0; t < n; t++)
        for (std::size_t i = 0; i < d_sae; i++) {
            double pre = b_enc[i];
            for (std::size_t j = 0; j < d_in; j++)
                pre += (double(x[t * d_in + j]) - b_dec[j]) * w_enc[j * d_sae + i];
            worst = std::fmax(worst, std::fabs(std::fmax(pre, 0.0) - f[t * d_sae + i]));
        }
    EXPECT(worst < 1e-5);

    sae_losses l_c{};
    EXPECT(sae_loss(raw, x.data(), n, 0.5, &l_c) == SAE_OK);
    const sae::losses l = m.loss(x, 0.5);
    EXPECT(l.loss == l_c.loss && l.l2 == l_c.l2 && l.l1 == l_c.l1 && l.l0 == l_c.l0);
    double fvu_c = 0;
    EXPECT(sae_fvu(raw, x.data(), n, &fvu_c) == SAE_OK && m.fvu(x) == fvu_c);

    // set, get; a bad tensor leaves the model as it was
    std::vector<float> b(d_in, 0.25f);
    m.set(sae::tensor::b_dec, b);
    EXPECT(m.get(SAE_B_DEC) == b);
    std::vector<float> nan_b(d_in, NAN);
    EXPECT_THROWS(sae::nonfinite_error, sae::status::nonfinite, m.set(SAE_B_DEC, nan_b));
    EXPECT(m.get(SAE_B_DEC) == b);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  m.set(SAE_B_DEC, std::vector<float>(d_in + 1)));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  m.encode(std::vector<float>(d_in + 1)));  // ragged
    EXPECT_THROWS(sae::nonfinite_error, sae::status::nonfinite,
                  m.encode(std::vector<float>(d_in, INFINITY)));
    sae_model_free(raw);
}

void test_architectures()
{
    sae::model topk(d_in, d_sae, 3, sae::arch::topk, 4);
    EXPECT(topk.architecture() == sae::arch::topk && topk.k() == 4);
    const std::vector<float> f = topk.encode(batch(n, d_in, 2));
    for (std::size_t t = 0; t < n; t++) {
        std::size_t active = 0;
        for (std::size_t i = 0; i < d_sae; i++)
            active += f[t * d_sae + i] > 0;
        EXPECT(active <= 4);
    }
    sae::model jr(d_in, d_sae, 3, SAE_ARCH_JUMPRELU, 0.01);
    EXPECT(jr.get(sae::tensor::threshold) == std::vector<float>(d_sae, 0.01f));
    sae::model btk(d_in, d_sae, 3, sae::arch::batchtopk, 2);
    EXPECT(btk.tensor_size(sae::tensor::threshold) == 1);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  sae::model(d_in, d_sae, 3, sae::arch::topk, double(d_sae + 1)));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, sae::model(0, d_sae, 1));
}

void test_training_against_c()
{
    const std::vector<float> x = batch(n, d_in, 3);
    sae::model m(d_in, d_sae, 11);
    sae::optimizer opt(m);
    opt.set(sae::option::lr, 1e-2).set(SAE_OPT_L1_COEFF, 0.5).set(sae::option::total_steps, 20);
    opt.set(sae::option::lr_schedule, sae::lr_schedule::cosine).set(SAE_OPT_KERNEL, sae::kernel::dense);
    EXPECT(opt.get(sae::option::lr) == 1e-2 && opt.get(SAE_OPT_LR_SCHEDULE) == double(SAE_LR_COSINE));
    // the GEMM backend and the encoder's precision: set, read back, resolved
    sae::optimizer other(m);
    other.set(sae::option::gemm, sae::gemm::cblas).set(sae::option::precision, sae::precision::bf16);
    EXPECT(other.get(SAE_OPT_GEMM) == double(SAE_GEMM_CBLAS) &&
           other.get(sae::option::precision) == double(SAE_PRECISION_BF16));
    EXPECT(sae::gemm_backend(sae::gemm::cblas) == sae::gemm::cblas);
    EXPECT(sae::gemm_backend(sae::gemm::automatic) == sae::gemm_backend(sae::gemm::onednn));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  sae::gemm_backend(static_cast<sae::gemm>(3)));

    sae_model *rm = nullptr;
    sae_optimizer *ro = nullptr;
    EXPECT(sae_model_create(&rm, d_in, d_sae, 11) == SAE_OK && sae_optimizer_create(&ro, rm) == SAE_OK);
    sae_optimizer_set(ro, SAE_OPT_LR, 1e-2);
    sae_optimizer_set(ro, SAE_OPT_L1_COEFF, 0.5);
    sae_optimizer_set(ro, SAE_OPT_TOTAL_STEPS, 20);
    sae_optimizer_set(ro, SAE_OPT_LR_SCHEDULE, SAE_LR_COSINE);
    sae_optimizer_set(ro, SAE_OPT_KERNEL, SAE_KERNEL_DENSE);
    for (int s = 0; s < 5; s++) {
        sae_losses lc{};
        EXPECT(sae_step(rm, ro, x.data(), n, &lc) == SAE_OK);
        const sae::losses l = opt.step(m, x);
        EXPECT(l.loss == lc.loss && l.l0 == lc.l0);
    }
    std::vector<float> w_c(d_sae * d_in);
    sae_model_get_tensor(rm, SAE_W_DEC, w_c.data(), w_c.size());
    EXPECT(same_bits(m.get(sae::tensor::w_dec), w_c) && opt.steps() == 5);
    double lr_c = 0, l1_c = 0;
    sae_optimizer_lr_at(ro, 7, &lr_c);
    sae_optimizer_l1_coeff_at(ro, 7, &l1_c);
    EXPECT(opt.lr_at(7) == lr_c && opt.l1_coeff_at(7) == l1_c);

    // errors change nothing
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, opt.set(sae::option::lr, -1.0));
    EXPECT_THROWS(sae::nonfinite_error, sae::status::nonfinite, opt.set(SAE_OPT_LR, NAN));
    EXPECT(opt.get(sae::option::lr) == 1e-2);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, opt.lr_at(0));
    std::vector<float> bad = x;
    bad[5] = NAN;
    EXPECT_THROWS(sae::nonfinite_error, sae::status::nonfinite, opt.step(m, bad));
    EXPECT(opt.steps() == 5 && same_bits(m.get(sae::tensor::w_dec), w_c));

    // feature activity
    std::vector<std::uint64_t> since_c(d_sae);
    sae_optimizer_tokens_since_fired(ro, since_c.data(), d_sae);
    EXPECT(opt.tokens_since_fired(d_sae) == since_c);
    std::size_t dead_c = 0;
    sae_optimizer_dead_count(ro, 1, &dead_c);
    EXPECT(opt.dead_count(1) == dead_c && opt.dead_features(1).size() == dead_c);
    for (std::size_t i : opt.dead_features(1))
        EXPECT(since_c[i] >= 1);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, opt.dead_count(0));
    sae_optimizer_free(ro);
    sae_model_free(rm);
}

void test_recipe()
{
    std::vector<float> x = batch(n, d_in, 4);
    const double s = sae::estimate_input_scale(x, d_in);
    double sum = 0;
    for (float v : x)
        sum += double(v) * v;
    EXPECT(std::fabs(s - std::sqrt(d_in / (sum / n))) < 1e-12 * s);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  sae::estimate_input_scale(std::vector<float>(d_in, 0.0f), d_in));

    // the FVU's denominator per token: l2 / total_variance is the FVU
    std::vector<double> x_mean(d_in);
    const double variance = sae::total_variance(x.data(), n, d_in, x_mean.data());
    double variance_c = 0;
    std::vector<double> mean_c(d_in);
    EXPECT(sae_total_variance(x.data(), n, d_in, mean_c.data(), &variance_c) == SAE_OK);
    EXPECT(variance == variance_c && x_mean == mean_c && sae::total_variance(x, d_in) == variance_c);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  sae::total_variance(std::vector<float>(d_in + 1, 0.0f), d_in));

    sae::model m(d_in, d_sae, 5);
    m.init_b_dec(x, sae::b_dec_init::mean);
    const std::vector<float> b = m.get(sae::tensor::b_dec);
    for (std::size_t j = 0; j < d_in; j++) {
        double mean = 0;
        for (std::size_t t = 0; t < n; t++)
            mean += x[t * d_in + j];
        EXPECT(std::fabs(b[j] - mean / n) < 1e-6);
    }
    m.init_b_dec(x, SAE_B_DEC_GEOMETRIC_MEDIAN);
    const std::vector<float> w = m.get(sae::tensor::w_enc);
    m.fold_input_scale(2.0);  // a power of two: exact
    const std::vector<float> w2 = m.get(sae::tensor::w_enc);
    for (std::size_t i = 0; i < w.size(); i++)
        EXPECT(w2[i] == 2 * w[i]);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, m.fold_input_scale(-1));

    const sae::density_histogram h = m.density_histogram(x, -std::log10(double(n)), 0, 5);
    std::uint64_t total = h.n_dead;
    for (std::uint64_t c : h.counts)
        total += c;
    EXPECT(h.counts.size() == 5 && total == d_sae);

    sae::optimizer opt(m);
    opt.step(m, x);
    const std::size_t dead = opt.dead_count(1);
    EXPECT(opt.resample_dead(m, x, 1, 42) == dead);
    EXPECT(opt.dead_count(1) == 0);
}

void test_checkpoints_and_ownership()
{
    const std::vector<float> x = batch(n, d_in, 5);
    sae::model m(d_in, d_sae, 9, sae::arch::jumprelu, 0.05);
    sae::optimizer opt(m);
    opt.step(m, x);

    const std::vector<unsigned char> mb = m.save_buffer(), ob = opt.save_buffer();
    EXPECT(mb.size() == m.save_size() && ob.size() == opt.save_size());
    sae::model m2 = sae::model::load_buffer(mb);
    sae::optimizer o2 = sae::optimizer::load_buffer(m2, ob);
    EXPECT(m2.architecture() == sae::arch::jumprelu && o2.steps() == 1);
    EXPECT(same_bits(m2.get(sae::tensor::threshold), m.get(sae::tensor::threshold)));

    char dir[] = "/tmp/sae_hpp_XXXXXX";
    EXPECT(mkdtemp(dir) != nullptr);
    const std::string path = dir;
    m.save(path);
    opt.save(path);
    sae::model m3 = sae::model::load(path);
    sae::optimizer o3 = sae::optimizer::load(m3, path);
    EXPECT(same_bits(m3.encode(x), m.encode(x)) && o3.steps() == 1);
    EXPECT(opt.step(m, x).loss == o3.step(m3, x).loss);  // resumes bit for bit
    std::remove((path + "/sae_weights.safetensors").c_str());
    std::remove((path + "/cfg.json").c_str());
    std::remove((path + "/optimizer.safetensors").c_str());
    rmdir(dir);

    EXPECT_THROWS(sae::io_error, sae::status::io, sae::model::load(path + "/missing"));
    const unsigned char junk[16] = {1, 2, 3};
    EXPECT_THROWS(sae::format_error, sae::status::format, sae::model::load_buffer(junk, sizeof junk));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, m.save_buffer(nullptr, 0));
    try {
        sae::model::load_buffer(junk, sizeof junk);
    } catch (const sae::error &e) {  // the base class and its function name
        EXPECT(std::string(e.function()) == "sae_model_load_buffer");
        EXPECT(std::string(e.what()).rfind("sae_model_load_buffer: ", 0) == 0);
    }

    // adopt a C handle, move it around, release it back to C
    sae_model *raw = nullptr;
    EXPECT(sae_model_create(&raw, d_in, d_sae, 1) == SAE_OK);
    sae::model owner(raw);
    sae::model moved(std::move(owner));
    EXPECT(!owner && moved && moved.handle() == raw);
    const sae::model &cref = moved;
    EXPECT(sae_model_d_in(cref.handle()) == d_in);
    sae_model *back = moved.release();
    EXPECT(back == raw && !moved);
    sae_model_free(back);
    sae_optimizer *ro = nullptr;
    EXPECT(sae_optimizer_create(&ro, m.handle()) == SAE_OK);
    sae::optimizer oo(ro);
    oo = sae::optimizer(m);  // frees ro
    EXPECT(oo.steps() == 0);
    oo.reset();
    EXPECT(!oo);
}

void test_checkpoint_directories()
{
    char base[] = "/tmp/sae_hpp_ckpt_XXXXXX";
    EXPECT(mkdtemp(base) != nullptr);
    const std::string dir = std::string(base) + "/run";
    sae::model m(d_in, d_sae, 3);
    sae::optimizer opt(m);
    {
        sae::checkpoint_writer ckpt(dir);
        m.save(ckpt.path());
        opt.save(ckpt.path());
        ckpt.commit();
        EXPECT(ckpt.path().empty());
    }
    const std::string first = sae::checkpoint_current(dir);
    EXPECT(first.rfind(dir + "/gen-", 0) == 0);
    EXPECT(sae::model::load(dir).save_buffer() == m.save_buffer());
    opt.step(m, batch(n, d_in, 8));
    {
        sae::checkpoint_writer ckpt(dir);  // destroyed uncommitted: aborted
        m.save(ckpt.path());
    }
    EXPECT(sae::checkpoint_current(dir) == first);
    EXPECT(sae::optimizer::load(m, dir).steps() == 0);
    EXPECT_THROWS(sae::io_error, sae::status::io, sae::checkpoint_current(dir + "/missing"));
    std::string cleanup = "rm -rf '" + std::string(base) + "'";
    EXPECT(std::system(cleanup.c_str()) == 0);
}

// sae::checkpoint_*: generations of a run's checkpoint directory.
void test_checkpoint_dirs()
{
    char tmp[] = "/tmp/sae_hpp_ck_XXXXXX";
    EXPECT(mkdtemp(tmp) != nullptr);
    const std::string run = std::string(tmp) + "/run";
    sae::model m(d_in, d_sae, 4);
    sae::optimizer opt(m);
    std::string stage = sae::checkpoint_begin(run);  // makes run
    EXPECT(stage == run + "/gen-1");
    m.save(stage);
    opt.save(stage);
    sae::checkpoint_commit(run, stage);
    EXPECT(sae::checkpoint_current(run) == run + "/gen-1");
    opt.step(m, batch(n, d_in, 7));
    stage = sae::checkpoint_begin(run);
    m.save(stage);
    opt.save(stage);
    sae::checkpoint_commit(run, stage);
    const std::string current = sae::checkpoint_current(run);
    EXPECT(current == run + "/gen-2");
    sae::model back = sae::model::load(run);  // through the links, as SAELens
    EXPECT(same_bits(back.get(sae::tensor::w_dec), m.get(sae::tensor::w_dec)));
    EXPECT(sae::optimizer::load(back, current).steps() == 1);
    stage = sae::checkpoint_begin(run);
    sae::checkpoint_abort(run, stage);  // a failed write: gen-2 stays
    EXPECT(sae::checkpoint_current(run) == current);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  sae::checkpoint_commit(run, std::string(tmp) + "/gen-3"));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, sae::checkpoint_abort(run, current));
    EXPECT_THROWS(sae::io_error, sae::status::io, sae::checkpoint_current(tmp));
    const std::string rm = "rm -rf '" + std::string(tmp) + "'";
    EXPECT(std::system(rm.c_str()) == 0);
}

// sae::check throws the class of each status.
void test_status_classes()
{
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, sae::check(SAE_E_INVALID_ARG, "f"));
    EXPECT_THROWS(sae::nomem_error, sae::status::nomem, sae::check(SAE_E_NOMEM, "f"));
    EXPECT_THROWS(sae::nonfinite_error, sae::status::nonfinite, sae::check(SAE_E_NONFINITE, "f"));
    EXPECT_THROWS(sae::io_error, sae::status::io, sae::check(SAE_E_IO, "f"));
    EXPECT_THROWS(sae::format_error, sae::status::format, sae::check(SAE_E_FORMAT, "f"));
    EXPECT_THROWS(sae::state_error, sae::status::state, sae::check(SAE_E_STATE, "f"));
    EXPECT_THROWS(sae::comm_error, sae::status::comm, sae::check(SAE_E_COMM, "f"));
    EXPECT_THROWS(sae::error, static_cast<sae::status>(-99), sae::check(-99, "f"));
    sae::check(SAE_OK, "f");  // no throw
}

void test_0_2_api()
{
    const std::vector<float> x = batch(n, d_in, 7);
    // clone: the same bits, independent
    sae::model m(d_in, d_sae, 4, sae::arch::batchtopk, 3);
    sae::optimizer opt(m);
    opt.step(m, x);
    sae::model c = m.clone();
    EXPECT(c.save_buffer() == m.save_buffer() && c.handle() != m.handle());
    c.set(sae::tensor::b_dec, std::vector<float>(d_in, 1.0f));
    EXPECT(c.save_buffer() != m.save_buffer());

    // fire counts over two batches, against encode
    std::vector<std::uint64_t> counts(d_sae, 0);
    m.feature_fire_counts(x, counts);
    m.feature_fire_counts(x.data(), 4, counts.data(), counts.size());
    const std::vector<float> f = m.encode(x);
    for (std::size_t i = 0; i < d_sae; i++) {
        std::uint64_t want = 0;
        for (std::size_t t = 0; t < n; t++)
            if (f[t * d_sae + i] > 0)
                want += t < 4 ? 2 : 1;
        EXPECT(counts[i] == want);
    }
    std::vector<std::uint64_t> short_counts(d_sae - 1);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  m.feature_fire_counts(x, short_counts));

    // the option table against what sae_optimizer_set accepts
    for (int o = 0; o < 64; o++) {
        if (!sae_option_name(o))
            continue;
        const sae::option opt_o = static_cast<sae::option>(o);
        EXPECT(std::string(sae::option_name(opt_o)) == sae_option_name(o));
        EXPECT(sae::option_default(opt_o) == sae::optimizer(m).get(opt_o));
        const sae::option_bounds b = sae::bounds(opt_o);
        sae::optimizer probe(m);
        for (double v : {b.lower, b.upper, b.lower - 1, b.lower + 0.5, b.upper - 0.5})
            if (std::isfinite(v))
                EXPECT(b.allows(v) == (sae_optimizer_set(probe.handle(), o, v) == SAE_OK));
    }
    EXPECT(sae::bounds(sae::option::threads).has(sae::option_flags::whole));
    EXPECT(sae::option_name(static_cast<sae::option>(999)) == nullptr);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  sae::option_default(static_cast<sae::option>(999)));

    // the generator: the C calls' bits
    sae::rng r(42, 7);
    sae_rng c_r;
    sae_rng_seed(&c_r, 42, 7);
    EXPECT(r.next() == sae_rng_next(&c_r) && r.uniform() == sae_rng_uniform(&c_r));
    EXPECT(r.normal() == sae_rng_normal(&c_r) && r.below(10) == sae_rng_below(&c_r, 10));
    std::vector<std::uint64_t> v{0, 1, 2, 3, 4, 5, 6, 7}, w = v;
    r.shuffle(v);
    EXPECT(sae_rng_shuffle(&c_r, w.data(), w.size()) == SAE_OK && v == w);
    sae::rng fork = r;  // plain data
    EXPECT(fork.next() == r.next());

    // errors carry the library's detail
    try {
        sae::optimizer(m).set(sae::option::beta1, 2.0);
        EXPECT(false);
    } catch (const sae::error &e) {
        EXPECT(!e.detail().empty() && e.detail() == sae::error_detail());
        EXPECT(std::string(e.what()).find(e.detail()) != std::string::npos);
    }
}

// The families (issue 16): a skip transcoder's output, loss, FVU and step
// against the C calls, and the shape checks of the target overloads.
void test_families()
{
    const std::size_t d_out = 5;
    sae::model m = sae::model::transcoder(d_in, d_out, d_sae, 3, sae::model_kind::skip_transcoder,
                                          sae::arch::topk, 3);
    EXPECT(m.d_out() == d_out && m.kind() == sae::model_kind::skip_transcoder);
    const std::vector<float> x = batch(n, d_in, 7), y = batch(n, d_out, 8);
    std::vector<float> out_c(n * d_out);
    EXPECT(sae_output(m.handle(), x.data(), n, out_c.data()) == SAE_OK);
    EXPECT(same_bits(m.output(x), out_c));
    sae_losses lc;
    EXPECT(sae_loss_target(m.handle(), x.data(), y.data(), n, 0.1, &lc) == SAE_OK);
    EXPECT(m.loss_target(x, y, 0.1).loss == lc.loss);
    double fc = 0;
    EXPECT(sae_fvu_target(m.handle(), x.data(), y.data(), n, &fc) == SAE_OK);
    EXPECT(m.fvu_target(x, y) == fc);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg,
                  m.fvu_target(x, std::vector<float>(y.begin(), y.end() - d_out)));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, m.loss(x, 0.1));

    sae::model m2 = m.clone();
    sae::optimizer o(m), o2(m2);
    sae_losses step_c;
    EXPECT(sae_step_target(m2.handle(), o2.handle(), x.data(), y.data(), n, &step_c) == SAE_OK);
    EXPECT(o.step_target(m, x, y).loss == step_c.loss);
    EXPECT(same_bits(m.output(x), m2.output(x)));
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, o.step(m, x));

    // a Matryoshka model trains and reports each level's l2 as the C call does
    const std::vector<std::size_t> widths = {4, 10};
    sae::model mat = sae::model::matryoshka(d_in, d_sae, 5, 2, widths);
    sae::optimizer om(mat);
    EXPECT(om.step(mat, x).loss > 0);
    std::vector<double> levels_c(3);
    EXPECT(sae_loss_levels(mat.handle(), x.data(), n, levels_c.data(), 3) == SAE_OK);
    EXPECT(mat.loss_levels(x) == levels_c);
    const double full = mat.loss(x, 0.0).l2; // the same sum, in another order
    EXPECT(std::fabs(mat.loss_levels(x).back() - full) <= 1e-6 * full);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, m2.loss_levels(x));
}

// A communicator of one rank: every collective is the identity.
int solo_f32(void *, float *, std::size_t) { return 0; }
int solo_f64(void *, double *, std::size_t) { return 0; }
int solo_gather(void *, const void *send, std::size_t bytes, void *recv)
{
    std::memcpy(recv, send, bytes);
    return 0;
}
int solo_bcast(void *, void *, std::size_t, int) { return 0; }

void test_distributed()
{
    sae::shard_span r = sae::shard_range(10, 3, 2);
    EXPECT(r.begin == 6 && r.end == 10 && r.d_sae_total == 10);
    EXPECT_THROWS(sae::invalid_arg_error, sae::status::invalid_arg, sae::shard_range(10, 3, 3));
    sae::model whole(d_in, d_sae, 5, sae::arch::topk, 3);
    sae::model part = sae::model::create_shard(d_in, d_sae, 2, 7, 5, sae::arch::topk, 3);
    sae::shard_span s = part.shard();
    EXPECT(s.begin == 2 && s.end == 7 && s.d_sae_total == d_sae && part.d_sae() == 5);
    std::vector<float> w(d_sae * d_in), p(5 * d_in);
    whole.get(sae::tensor::w_dec, w.data(), w.size());
    part.get(sae::tensor::w_dec, p.data(), p.size());
    EXPECT(std::memcmp(w.data() + 2 * d_in, p.data(), p.size() * sizeof(float)) == 0);
    EXPECT_THROWS(sae::state_error, sae::status::state, part.encode(batch(n, d_in, 1)));
    // a transcoder's shard: its W_dec rows (d_out wide)
    const std::size_t d_out = 5;
    sae::model tc = sae::model::transcoder(d_in, d_out, d_sae, 5, sae::model_kind::skip_transcoder,
                                           sae::arch::relu, 0.0);
    sae::model tc_part = sae::model::transcoder_shard(d_in, d_out, d_sae, 2, 7, 5,
                                                      sae::model_kind::skip_transcoder,
                                                      sae::arch::relu, 0.0);
    std::vector<float> tw(d_sae * d_out), tp(5 * d_out);
    tc.get(sae::tensor::w_dec, tw.data(), tw.size());
    tc_part.get(sae::tensor::w_dec, tp.data(), tp.size());
    EXPECT(std::memcmp(tw.data() + 2 * d_out, tp.data(), tp.size() * sizeof(float)) == 0);
    // a Matryoshka SAE's shard: its W_dec rows, the whole model's widths
    sae::model mat = sae::model::matryoshka(d_in, d_sae, 5, 3, {4});
    sae::model mat_part = sae::model::matryoshka_shard(d_in, d_sae, 2, 7, 5, 3, {4});
    mat.get(sae::tensor::w_dec, w.data(), w.size());
    mat_part.get(sae::tensor::w_dec, p.data(), p.size());
    EXPECT(std::memcmp(w.data() + 2 * d_in, p.data(), p.size() * sizeof(float)) == 0);
    EXPECT(mat_part.matryoshka_widths() == mat.matryoshka_widths());
    // one rank, data-parallel: the single-process step, saved by rank 0
    sae_comm solo = {sizeof(sae_comm), nullptr, 0, 1, solo_f32, solo_f64, solo_gather, solo_bcast};
    sae::model a(d_in, d_sae, 3), b(d_in, d_sae, 3);
    sae::optimizer oa(a), ob(b);
    ob.set_comm(sae::parallel::data, &solo);
    const std::vector<float> x = batch(n, d_in, 9);
    EXPECT(oa.step(a, x).loss == ob.step(b, x).loss);
    ob.set_comm(sae::parallel::data, nullptr);
    char dir[] = "/tmp/sae-hpp-XXXXXX";
    EXPECT(mkdtemp(dir) != nullptr);
    b.save_collective(solo, dir);
    ob.save_collective(solo, std::string(dir));
    sae::model back = sae::model::load_shard(std::string(dir), 0, d_sae);
    EXPECT(back.shard().end == d_sae);
    // the checkpoint in one call, through the optimizer's communicator
    ob.set_comm(sae::parallel::data, &solo);
    ob.save_checkpoint_collective(b, std::string(dir));
    EXPECT(sae::optimizer::load(sae::model::load(dir), dir).steps() == 1);
    ob.set_comm(sae::parallel::data, nullptr);
    EXPECT_THROWS(sae::state_error, sae::status::state, ob.save_checkpoint_collective(b, dir));
    for (const char *f : {"sae_weights.safetensors", "cfg.json", "optimizer.safetensors"})
        std::remove((std::string(dir) + "/" + f).c_str());
    rmdir(dir);
}

#if __cplusplus >= 202002L
void test_spans()
{
    const std::vector<float> v = batch(n, d_in, 6);
    const std::span<const float> x(v);
    sae::model m(d_in, d_sae, 2);
    EXPECT(same_bits(m.encode(x), m.encode(v)));
    EXPECT(m.loss(x.first(4 * d_in), 1.0).l2 == m.loss(v.data(), 4, 1.0).l2);
    float b[d_in] = {};
    m.get(sae::tensor::b_dec, std::span<float>(b));
    m.set(sae::tensor::b_dec, std::span<const float>(b));
    std::vector<unsigned char> buf(m.save_size());
    EXPECT(m.save_buffer(std::span<unsigned char>(buf)) == buf.size());
    sae::model m2 = sae::model::load_buffer(std::span<const unsigned char>(buf));
    sae::optimizer o(m2);
    EXPECT(o.step(m2, x).l0 >= 0 && m2.fvu(x) >= 0);
}
#endif

} // namespace

int main()
{
    EXPECT(sae::version_number() == SAE_VERSION_NUMBER);
    EXPECT(std::string(sae::version_string()) == sae_version_string());
    EXPECT(std::string(sae::status_string(sae::status::format)) == sae_status_string(SAE_E_FORMAT));
    test_model_against_c();
    test_architectures();
    test_training_against_c();
    test_recipe();
    test_checkpoints_and_ownership();
    test_checkpoint_dirs();
    test_0_2_api();
    test_status_classes();
    test_distributed();
    test_checkpoint_directories();
    test_families();
#if __cplusplus >= 202002L
    test_spans();
#endif
    if (failures) {
        std::fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    std::printf("sae.hpp: all checks passed (C++%ld)\n", __cplusplus / 100 % 100);
    return 0;
}
