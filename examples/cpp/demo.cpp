// sae-cpp-demo: train a small SAE for a few hundred steps through the C++
// interface <libsae/sae.hpp>, save and reload it, and show an error arriving
// as an exception. Exit status 0 when the loss fell and the error was
// reported as expected.
//
//     c++ -std=c++17 demo.cpp $(pkg-config --cflags --libs sae)
#include <libsae/sae.hpp>

#include <cstdio>
#include <random>
#include <vector>

int main()
{
    const std::size_t d_in = 32, d_sae = 128, n_true = 48, batch = 128;
    // Synthetic data: each token a sparse positive mix of n_true random directions.
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<float> dirs(n_true * d_in);
    for (float &v : dirs)
        v = normal(rng);
    auto make_batch = [&](std::size_t n) {
        std::vector<float> x(n * d_in, 0.0f);
        for (std::size_t t = 0; t < n; t++)
            for (std::size_t i = 0; i < n_true; i++)
                if (uniform(rng) < 3.0f / n_true) {
                    float c = uniform(rng);
                    for (std::size_t j = 0; j < d_in; j++)
                        x[t * d_in + j] += c * dirs[i * d_in + j] / 6.0f;
                }
        return x;
    };

    try {
        sae::model m(d_in, d_sae, /*seed*/ 42);   // ReLU; or (..., sae::arch::topk, k)
        sae::optimizer opt(m);
        opt.set(sae::option::lr, 2e-3).set(sae::option::l1_coeff, 0.1);
        const std::vector<float> held_out = make_batch(1024);
        const sae::losses before = m.loss(held_out, 0.1);
        for (int step = 1; step <= 400; step++) {
            const sae::losses l = opt.step(m, make_batch(batch));
            if (step % 100 == 0)
                std::printf("step %3d  loss %.4f  l2 %.4f  l1 %.4f  l0 %.1f\n", step, l.loss,
                            l.l2, l.l1, l.l0);
        }
        const sae::losses after = m.loss(held_out, 0.1);
        std::printf("held-out loss %.4f -> %.4f, fvu %.3f, %zu of %zu features dead over 10k "
                    "tokens\n", before.loss, after.loss, m.fvu(held_out), opt.dead_count(10000),
                    d_sae);
        if (!(after.loss < 0.5 * before.loss)) {
            std::fprintf(stderr, "sae-cpp-demo: the loss did not fall enough\n");
            return 1;
        }

        // A checkpoint in memory (save_buffer; save(dir) writes SAELens's files).
        const sae::model copy = sae::model::load_buffer(m.save_buffer());
        std::printf("reloaded: fvu %.3f\n", copy.fvu(held_out));

        // Errors are exceptions carrying the status and the library's message.
        try {
            opt.set(sae::option::lr, -1.0);
            std::fprintf(stderr, "sae-cpp-demo: a negative learning rate was accepted\n");
            return 1;
        } catch (const sae::invalid_arg_error &e) {
            std::printf("caught sae::invalid_arg_error (status %d): %s\n", e.code(), e.what());
        }
        std::printf("learning rate still %g\n", opt.get(sae::option::lr));
    } catch (const sae::error &e) {
        std::fprintf(stderr, "sae-cpp-demo: %s\n", e.what());
        return 1;
    }
    return 0;
}
