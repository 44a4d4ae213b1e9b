// The checks of the C++ tests of sae.hpp (tests/cpp): EXPECT records a
// failure and goes on, EXPECT_THROWS expects an exception of a type with a
// status; main returns `failures` != 0. One copy for every test here.
#ifndef SAE_TEST_EXPECT_HPP
#define SAE_TEST_EXPECT_HPP

#include <libsae/sae.hpp>

#include <cstdio>
#include <cstring>

static int failures = 0;

#define EXPECT(cond)                                                                   \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);   \
            failures++;                                                                \
        }                                                                              \
    } while (0)

// Expect `stmt` to throw exception type E carrying status `st`.
#define EXPECT_THROWS(E, st, stmt)                                                     \
    do {                                                                               \
        bool caught_ = false;                                                          \
        try {                                                                          \
            stmt;                                                                      \
        } catch (const E &e_) {                                                        \
            caught_ = e_.status() == (st) && e_.code() == static_cast<int>(st) &&      \
                      std::strstr(e_.what(), sae_status_string(e_.code())) != nullptr;  \
        }                                                                              \
        if (!caught_) {                                                                \
            std::fprintf(stderr, "%s:%d: expected %s from %s\n", __FILE__, __LINE__, #E, \
                         #stmt);                                                       \
            failures++;                                                                \
        }                                                                              \
    } while (0)

#endif
