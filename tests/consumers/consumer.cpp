// A C++ program outside the libsae tree, built against the INSTALLED package:
// with CMake (find_package(sae CONFIG REQUIRED), target sae::sae or
// sae::sae_static; see project/CMakeLists.txt) and with pkg-config. It uses
// the installed C++ interface <libsae/sae.hpp> for the same computation as
// consumer.c: it must print the same lines.
#include <libsae/sae.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace {

constexpr std::size_t d_in = 8, d_sae = 32, n_tokens = 64;
constexpr int n_steps = 5;
constexpr std::uint64_t seed = 20240501u;

void print_losses(const char *what, int i, const sae::losses &l)
{
    std::printf("%s %d loss %.17g l2 %.17g l1 %.17g l0 %.17g\n", what, i, l.loss, l.l2, l.l1,
                l.l0);
}

} // namespace

int main()
{
    const std::string header = std::to_string(SAE_VERSION_MAJOR) + "." +
                               std::to_string(SAE_VERSION_MINOR) + "." +
                               std::to_string(SAE_VERSION_PATCH);
    std::printf("# header %s (%d), library %s (%u)\n", header.c_str(), SAE_VERSION_NUMBER,
                sae::version_string(), sae::version_number());
    if (sae::version_number() != unsigned(SAE_VERSION_NUMBER) || header != sae::version_string()) {
        std::fprintf(stderr, "the library does not match the header\n");
        return 1;
    }

    std::vector<float> x(n_tokens * d_in);
    for (std::size_t t = 0; t < n_tokens; t++)
        for (std::size_t j = 0; j < d_in; j++)
            x[t * d_in + j] = float(int((7 * t + 3 * j) % 41) - 20) / 16.0f;

    try {
        sae::model model(d_in, d_sae, seed);
        sae::optimizer opt(model);
        opt.set(sae::option::lr, 1e-2).set(SAE_OPT_L1_COEFF, 0.5);
        for (int s = 0; s < n_steps; s++)
            print_losses("step", s, opt.step(model, x));
        print_losses("final", n_steps, model.loss(x, 0.5));
        return opt.steps() == std::uint64_t(n_steps) ? 0 : 1;
    } catch (const sae::error &e) {
        std::fprintf(stderr, "libsae: %s\n", e.what());
        return 1;
    }
}
