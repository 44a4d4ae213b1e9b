// A C++ program outside the libsae tree, built with CMake against the INSTALLED
// package (find_package(sae CONFIG REQUIRED), target sae::sae or
// sae::sae_static; see project/CMakeLists.txt). The same computation as
// consumer.c, with the handles owned by std::unique_ptr: it must print the
// same lines.
#include <libsae/sae.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr int d_in = 8, d_sae = 32, n_tokens = 64, n_steps = 5;
constexpr std::uint64_t seed = 20240501u;

struct model_deleter {
    void operator()(sae_model *m) const { sae_model_free(m); }
};
struct optimizer_deleter {
    void operator()(sae_optimizer *o) const { sae_optimizer_free(o); }
};
using model_ptr = std::unique_ptr<sae_model, model_deleter>;
using optimizer_ptr = std::unique_ptr<sae_optimizer, optimizer_deleter>;

void print_losses(const char *what, int i, const sae_losses &l)
{
    std::printf("%s %d loss %.17g l2 %.17g l1 %.17g l0 %.17g\n", what, i, l.loss, l.l2, l.l1,
                l.l0);
}

int fail(int rc)
{
    std::fprintf(stderr, "libsae: %s\n", sae_status_string(rc));
    return 1;
}

} // namespace

int main()
{
    const std::string header = std::to_string(SAE_VERSION_MAJOR) + "." +
                               std::to_string(SAE_VERSION_MINOR) + "." +
                               std::to_string(SAE_VERSION_PATCH);
    std::printf("# header %s (%d), library %s (%u)\n", header.c_str(), SAE_VERSION_NUMBER,
                sae_version_string(), sae_version_number());
    if (sae_version_number() != unsigned(SAE_VERSION_NUMBER) || header != sae_version_string()) {
        std::fprintf(stderr, "the library does not match the header\n");
        return 1;
    }

    std::vector<float> x(std::size_t(n_tokens) * d_in);
    for (int t = 0; t < n_tokens; t++)
        for (int j = 0; j < d_in; j++)
            x[std::size_t(t) * d_in + j] = float(((7 * t + 3 * j) % 41) - 20) / 16.0f;

    sae_model *raw_model = nullptr;
    int rc = sae_model_create(&raw_model, d_in, d_sae, seed);
    if (rc != SAE_OK)
        return fail(rc);
    model_ptr model(raw_model);
    sae_optimizer *raw_opt = nullptr;
    if ((rc = sae_optimizer_create(&raw_opt, model.get())) != SAE_OK)
        return fail(rc);
    optimizer_ptr opt(raw_opt);
    if ((rc = sae_optimizer_set(opt.get(), SAE_OPT_LR, 1e-2)) != SAE_OK ||
        (rc = sae_optimizer_set(opt.get(), SAE_OPT_L1_COEFF, 0.5)) != SAE_OK)
        return fail(rc);

    sae_losses l{};
    for (int s = 0; s < n_steps; s++) {
        if ((rc = sae_step(model.get(), opt.get(), x.data(), n_tokens, &l)) != SAE_OK)
            return fail(rc);
        print_losses("step", s, l);
    }
    if ((rc = sae_loss(model.get(), x.data(), n_tokens, 0.5, &l)) != SAE_OK)
        return fail(rc);
    print_losses("final", n_steps, l);
    return sae_optimizer_steps(opt.get()) == std::uint64_t(n_steps) ? 0 : 1;
}
