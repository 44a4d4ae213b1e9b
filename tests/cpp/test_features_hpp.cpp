// Tests of sae.hpp's sparse codes, feature statistics and decoder neighbours:
// each wrapper against the C calls it wraps (same bits), errors as the right
// exception, and ownership. Built and run by tests/cpp/run.sh (SAE_HPP_TEST).
#include "expect.hpp"

#include <libsae/sae.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

static_assert(!std::is_copy_constructible_v<sae::feature_stats> &&
              std::is_nothrow_move_constructible_v<sae::feature_stats>);

const std::size_t d_in = 8, d_sae = 24, n = 40;

std::vector<float> batch(std::size_t rows, int salt)
{
    std::vector<float> x(rows * d_in);
    for (std::size_t i = 0; i < x.size(); i++)
        x[i] = static_cast<float>(static_cast<int>((i * 7 + static_cast<std::size_t>(salt) * 13) % 23) - 11) / 8.0f;
    return x;
}

template <class T> bool same(const std::vector<T> &a, const std::vector<T> &b)
{
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

void test_sparse_codes()
{
    sae::model m(d_in, d_sae, 3);
    const std::vector<float> x = batch(n, 1), f = m.encode(x);
    for (std::size_t cap : {std::size_t(0), std::size_t(2)}) {
        sae::sparse_codes c = sae::encode_sparse(m, x, cap);
        std::size_t nnz = 0, done = 0;
        EXPECT(sae_encode_sparse_size(m.handle(), x.data(), n, cap, &nnz) == SAE_OK);
        std::vector<std::size_t> off(n + 1);
        std::vector<std::uint32_t> feat(nnz);
        std::vector<float> val(nnz);
        EXPECT(sae_encode_sparse(m.handle(), x.data(), n, cap, off.data(), feat.data(), val.data(),
                                 nnz, &done) == SAE_OK && done == n);
        EXPECT(same(c.offsets, off) && same(c.features, feat) && same(c.values, val));
        if (cap == 0) { // every positive entry of the dense features, bit for bit
            std::size_t k = 0;
            for (std::size_t t = 0; t < n; t++)
                for (std::size_t i = 0; i < d_sae; i++)
                    if (f[t * d_sae + i] > 0.0f) {
                        EXPECT(c.features[k] == i && c.values[k] == f[t * d_sae + i]);
                        k++;
                    }
            EXPECT(k == c.features.size() && k > 0);
        }
    }
    bool caught = false;
    try {
        (void)sae::encode_sparse(m, std::vector<float>(d_in + 1));
    } catch (const sae::invalid_arg_error &) {
        caught = true;
    }
    EXPECT(caught);
}

void test_feature_stats()
{
    sae::model m(d_in, d_sae, 4);
    const std::vector<float> x = batch(n, 2);
    sae::feature_stats s(d_sae, 5, 10, -3.0, 1.0);
    sae_feature_stats *raw = nullptr;
    EXPECT(sae_feature_stats_create(&raw, d_sae, 5, 10, -3.0, 1.0) == SAE_OK);
    s.add(m, x);
    EXPECT(sae_feature_stats_add(raw, m.handle(), x.data(), n) == SAE_OK);
    EXPECT(s.d_sae() == d_sae && s.top_n() == 5 && s.bins() == 10 && s.rows() == n &&
           s.next_row() == n);
    EXPECT(same(s.save_buffer(), sae::feature_stats(raw).save_buffer()));
    std::vector<std::uint64_t> counts(d_sae);
    sae::feature_stats copy = sae::feature_stats::load_buffer(s.save_buffer());
    EXPECT(same(copy.counts(), s.counts()) && same(copy.histogram(), s.histogram()));
    EXPECT(s.bin_edges().size() == 11 && s.max().size() == d_sae);
    auto sums = s.sums();
    EXPECT(sums.first.size() == d_sae && sums.second.size() == d_sae);
    for (std::size_t i = 0; i < d_sae; i++) {
        sae::feature_stats::top_rows t = s.top(i);
        EXPECT(t.rows.size() == (s.counts()[i] < 5 ? s.counts()[i] : 5));
        if (!t.values.empty())
            EXPECT(t.values[0] == s.max()[i]);
    }
    // the same rows again as sparse codes, with their own row ids, merged
    sae::feature_stats late(d_sae, 5, 10, -3.0, 1.0);
    late.set_next_row(n);
    late.add_sparse(sae::encode_sparse(m, x));
    s.merge(late);
    EXPECT(s.rows() == 2 * n && s.next_row() == 2 * n);
    bool caught = false;
    try {
        s.merge(copy); // rows 0..n-1 are in both
    } catch (const sae::invalid_arg_error &e) {
        caught = e.status() == sae::status::invalid_arg &&
                 std::strstr(sae_error_detail(), "cannot be disjoint") != nullptr;
    }
    EXPECT(caught);
    caught = false;
    try {
        (void)sae::feature_stats::load_buffer(std::vector<unsigned char>(16));
    } catch (const sae::format_error &) {
        caught = true;
    }
    EXPECT(caught);
}

void test_neighbors()
{
    sae::model m(d_in, d_sae, 5);
    sae::neighbors nb = sae::decoder_neighbors(m, 3);
    std::vector<std::uint32_t> idx(d_sae * 3);
    std::vector<float> cos(d_sae * 3);
    EXPECT(sae_decoder_neighbors(m.handle(), 3, idx.data(), cos.data(), idx.size()) == SAE_OK);
    EXPECT(nb.k == 3 && same(nb.idx, idx) && same(nb.cosine, cos));
    bool caught = false;
    try {
        (void)sae::decoder_neighbors(m, d_sae);
    } catch (const sae::invalid_arg_error &) {
        caught = true;
    }
    EXPECT(caught);
}

void test_max_cosine()
{
    sae::model m(d_in, d_sae, 5);
    const std::vector<float> w = m.get(sae::tensor::w_dec);
    // the decoder's rows 3 and 8, scaled: each finds its own row
    std::vector<float> truth(2 * d_in);
    for (std::size_t c = 0; c < d_in; c++) {
        truth[c] = 2.0f * w[3 * d_in + c];
        truth[d_in + c] = 0.5f * w[8 * d_in + c];
    }
    sae::max_cosines r = sae::max_cosine(truth, w, d_in);
    std::vector<float> cos(2);
    std::vector<std::uint32_t> idx(2);
    EXPECT(sae_max_cosine(truth.data(), 2, w.data(), d_sae, d_in, cos.data(), idx.data()) ==
           SAE_OK);
    EXPECT(same(r.cosine, cos) && same(r.idx, idx));
    EXPECT(r.idx[0] == 3 && r.idx[1] == 8 && std::fabs(r.cosine[0] - 1.0f) < 1e-6f);
    bool caught = false;
    try {
        (void)sae::max_cosine(truth, std::vector<float>(d_in + 1), d_in);  // ragged b
    } catch (const sae::invalid_arg_error &) {
        caught = true;
    }
    EXPECT(caught);
}

} // namespace

int main()
{
    test_sparse_codes();
    test_feature_stats();
    test_neighbors();
    test_max_cosine();
    if (failures)
        std::fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
