/*
 * The strict JSON parser behind the checkpoint loaders (src/json.c): what it
 * accepts, the tree it builds, and every kind of text it must refuse.
 */
#include "../src/internal.h"
#include "../src/json.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sae_json_limits loose = {.max_depth = 16, .max_nodes = 1000};

static int parse(const char *text, sae_json_doc *doc)
{
    return sae__json_parse(text, strlen(text), &loose, doc);
}

START_TEST(builds_the_tree)
{
    sae_json_doc doc;
    const char *text = " {\"a\": [1, -2.5e3, true, false, null], \"b\\u00e9\": {\"c\": \"x\\ny\"},"
                       " \"d\": \"\\ud83d\\ude00\\\\/\\\"\"} \n\t\r ";
    ck_assert_int_eq(parse(text, &doc), SAE_OK);
    const sae_json *n = doc.nodes;
    ck_assert_int_eq(n[0].type, SAE_JSON_OBJECT);
    ck_assert_uint_eq(n[0].len, 3);
    ck_assert_uint_eq(n[0].next, doc.count);
    size_t a = sae__json_member(&doc, 0, "a");
    ck_assert_uint_ne(a, SIZE_MAX);
    ck_assert_int_eq(n[a].type, SAE_JSON_ARRAY);
    ck_assert_uint_eq(n[a].len, 5);
    ck_assert_int_eq(n[a + 1].type, SAE_JSON_NUMBER);
    uint64_t v;
    ck_assert(sae__json_u64(&n[a + 1], &v));
    ck_assert_uint_eq(v, 1);
    ck_assert_int_eq(n[a + 2].type, SAE_JSON_NUMBER);
    ck_assert_uint_eq(n[a + 2].len, 6);
    ck_assert(memcmp(n[a + 2].str, "-2.5e3", 6) == 0);
    ck_assert(!sae__json_u64(&n[a + 2], &v));
    ck_assert_int_eq(n[a + 3].type, SAE_JSON_TRUE);
    ck_assert_int_eq(n[a + 4].type, SAE_JSON_FALSE);
    ck_assert_int_eq(n[a + 5].type, SAE_JSON_NULL);
    /* escapes decode to UTF-8: e-acute is C3 A9 */
    size_t b = sae__json_member(&doc, 0, "b\xc3\xa9");
    ck_assert_uint_ne(b, SIZE_MAX);
    size_t c = sae__json_member(&doc, b, "c");
    ck_assert(sae__json_is_string(&n[c], "x\ny"));
    size_t d = sae__json_member(&doc, 0, "d");
    /* U+1F600 from a surrogate pair is F0 9F 98 80 */
    ck_assert(sae__json_is_string(&n[d], "\xf0\x9f\x98\x80\\/\""));
    ck_assert_uint_eq(sae__json_member(&doc, 0, "missing"), SIZE_MAX);
    ck_assert_uint_eq(sae__json_member(&doc, a, "a"), SIZE_MAX); /* not an object */
    sae__json_free(&doc);
    ck_assert_ptr_null(doc.nodes);
    sae__json_free(&doc); /* a zeroed document is fine */
}
END_TEST

START_TEST(strings_keep_embedded_nul_and_raw_utf8)
{
    sae_json_doc doc;
    const char text[] = "[\"a\\u0000b\", \"\xe2\x82\xac\xf4\x8f\xbf\xbf\", \"\"]";
    ck_assert_int_eq(sae__json_parse(text, sizeof text - 1, &loose, &doc), SAE_OK);
    ck_assert_uint_eq(doc.nodes[1].len, 3);
    ck_assert(memcmp(doc.nodes[1].str, "a\0b", 3) == 0);
    ck_assert(sae__json_is_string(&doc.nodes[2], "\xe2\x82\xac\xf4\x8f\xbf\xbf"));
    ck_assert(sae__json_is_string(&doc.nodes[3], ""));
    sae__json_free(&doc);
}
END_TEST

START_TEST(integers)
{
    sae_json_doc doc;
    ck_assert_int_eq(parse("[0, 18446744073709551615, 18446744073709551616, 1.0, 1e2, -0]", &doc),
                     SAE_OK);
    uint64_t v;
    ck_assert(sae__json_u64(&doc.nodes[1], &v));
    ck_assert_uint_eq(v, 0);
    ck_assert(sae__json_u64(&doc.nodes[2], &v));
    ck_assert_uint_eq(v, UINT64_MAX);
    ck_assert(!sae__json_u64(&doc.nodes[3], &v)); /* overflows */
    ck_assert(!sae__json_u64(&doc.nodes[4], &v)); /* has a fraction */
    ck_assert(!sae__json_u64(&doc.nodes[5], &v)); /* has an exponent */
    ck_assert(!sae__json_u64(&doc.nodes[6], &v)); /* has a sign */
    ck_assert(!sae__json_u64(&doc.nodes[0], &v)); /* not a number */
    sae__json_free(&doc);
}
END_TEST

/* Each of these must be refused with SAE_E_FORMAT and nothing allocated. */
static const char *const bad_texts[] = {
    "", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{\"a\":}", "{1:2}",
    "{\"a\":1 \"b\":2}", "[1 2]", "tru", "nul", "falsey", "True", "\"abc", "\"a\\\"",
    "01", "-", "-a", "1.", ".5", "1e", "1e+", "+1", "0x10", "1.5.5", "--1", "NaN", "Infinity",
    "[1]x", "{} {}", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\ud800\"", "\"\\udc00\"",
    "\"\\ud800\\u0041\"", "\"\\ud800x\"", "\"tab\there\"", "\"nl\nhere\"",
    "\"\xc3\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
    "\"\xf8\x88\x80\x80\x80\"", "\"\x80\"", "\"\xff\"", "\"\xe2\x82\"", "[1]\x00",
    "{\"a\":1,\"a\":2}", "{\"a\":{\"b\":1,\"b\":1}}", "{\"\\u0061\":1,\"a\":2}",
};

START_TEST(refuses_malformed_text)
{
    for (size_t k = 0; k < sizeof bad_texts / sizeof bad_texts[0]; k++) {
        sae_json_doc doc;
        size_t live = sae__test_bytes_live;
        size_t len = strlen(bad_texts[k]);
        if (k == sizeof bad_texts / sizeof bad_texts[0] - 4)
            len = 4; /* "[1]" followed by a NUL byte */
        int rc = sae__json_parse(bad_texts[k], len, &loose, &doc);
        ck_assert_msg(rc == SAE_E_FORMAT, "case %zu (%s): %d", k, bad_texts[k], rc);
        ck_assert_ptr_null(doc.nodes);
        ck_assert_uint_eq(sae__test_bytes_live, live);
    }
}
END_TEST

START_TEST(limits_depth_and_size)
{
    const sae_json_limits lim = {.max_depth = 3, .max_nodes = 6};
    sae_json_doc doc;
    ck_assert_int_eq(sae__json_parse("[[[]]]", 6, &lim, &doc), SAE_OK);
    sae__json_free(&doc);
    ck_assert_int_eq(sae__json_parse("[[[[]]]]", 8, &lim, &doc), SAE_E_FORMAT);
    ck_assert_int_eq(sae__json_parse("{\"a\":{\"b\":{\"c\":1}}}", 19, &lim, &doc), SAE_E_FORMAT);
    ck_assert_int_eq(sae__json_parse("[1,2,3,4,5]", 11, &lim, &doc), SAE_OK); /* 6 values */
    sae__json_free(&doc);
    ck_assert_int_eq(sae__json_parse("[1,2,3,4,5,6]", 13, &lim, &doc), SAE_E_FORMAT);
    /* a deep document must not exhaust the stack either */
    size_t n = 100000;
    char *deep = malloc(2 * n);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    ck_assert_int_eq(sae__json_parse(deep, 2 * n, &loose, &doc), SAE_E_FORMAT);
    free(deep);
}
END_TEST

/* Objects with more than a handful of keys are checked for duplicates by
 * sorting; build one with 200 keys, then repeat one of them. */
START_TEST(duplicates_in_large_objects)
{
    const sae_json_limits lim = {.max_depth = 4, .max_nodes = 10000};
    char *text = malloc(200 * 16 + 64);
    for (int dup = 0; dup < 2; dup++) {
        size_t pos = 0;
        pos += (size_t)sprintf(text + pos, "{");
        for (int k = 0; k < 200; k++)
            pos += (size_t)sprintf(text + pos, "%s\"k%d\":%d", k ? "," : "", (k * 37) % 200, k);
        if (dup)
            pos += (size_t)sprintf(text + pos, ",\"k123\":0");
        pos += (size_t)sprintf(text + pos, "}");
        sae_json_doc doc;
        int rc = sae__json_parse(text, pos, &lim, &doc);
        ck_assert_int_eq(rc, dup ? SAE_E_FORMAT : SAE_OK);
        if (rc == SAE_OK) {
            size_t v = sae__json_member(&doc, 0, "k74"); /* (2 * 37) % 200 */
            ck_assert(sae__json_u64(&doc.nodes[v], &(uint64_t){0}));
            ck_assert(memcmp(doc.nodes[v].str, "2", 1) == 0);
        }
        sae__json_free(&doc);
    }
    free(text);
}
END_TEST

START_TEST(allocation_failures_are_clean)
{
    const char *text = "{\"k0\":1,\"k1\":2,\"k2\":3,\"k3\":4,\"k4\":5,\"k5\":6,\"k6\":7,\"k7\":8,\"k8\":9,"
                       "\"k9\":0,\"ka\":1,\"kb\":2,\"kc\":3,\"kd\":4,\"ke\":5,\"kf\":6,\"kg\":7}";
    size_t live = sae__test_bytes_live;
    long k;
    for (k = 0;; k++) {
        sae_json_doc doc;
        sae__test_fail_countdown = k;
        int rc = sae__json_parse(text, strlen(text), &loose, &doc);
        sae__test_fail_countdown = -1;
        if (rc == SAE_OK) {
            sae__json_free(&doc);
            break;
        }
        ck_assert_int_eq(rc, SAE_E_NOMEM);
        ck_assert_ptr_null(doc.nodes);
        ck_assert_uint_eq(sae__test_bytes_live, live);
    }
    ck_assert_int_eq(k, 3); /* nodes, strings, the key-sorting scratch */
    ck_assert_uint_eq(sae__test_bytes_live, live);
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("parser");
    tcase_add_test(tc, builds_the_tree);
    tcase_add_test(tc, strings_keep_embedded_nul_and_raw_utf8);
    tcase_add_test(tc, integers);
    tcase_add_test(tc, refuses_malformed_text);
    tcase_add_test(tc, limits_depth_and_size);
    tcase_add_test(tc, duplicates_in_large_objects);
    tcase_add_test(tc, allocation_failures_are_clean);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(json_suite)
