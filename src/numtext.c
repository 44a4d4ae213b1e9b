/*
 * Numbers as text, exactly: the decimals and hexadecimal floats of checkpoint
 * metadata, written and read by hand because printf's and strtod's output and
 * input depend on the locale (see checkpoint.h).
 */
#include "checkpoint.h"

#include <string.h>

void sae__format_decimal(uint64_t v, char out[SAE_DECIMAL_BYTES])
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    int k = 0;
    while (n > 0)
        out[k++] = digits[--n];
    out[k] = '\0';
}

bool sae__parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9')
            return false;
        unsigned d = (unsigned)(s[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static const char hex_digits[] = "0123456789abcdef";

bool sae__parse_hex(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) {
        const char *d = s[k] ? memchr(hex_digits, s[k], 16) : NULL;
        if (!d)
            return false;
        v = v << 4 | (uint64_t)(d - hex_digits);
    }
    *out = v;
    return true;
}

void sae__format_hex_double(double v, char out[SAE_HEX_DOUBLE_BYTES])
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    char *p = out;
    if (bits >> 63)
        *p++ = '-';
    unsigned exp = (unsigned)(bits >> 52) & 0x7FFu;
    uint64_t mant = bits & ((UINT64_C(1) << 52) - 1);
    if (exp == 0 && mant == 0) {
        strcpy(p, "0x0.0p+0");
        return;
    }
    *p++ = '0';
    *p++ = 'x';
    *p++ = exp ? '1' : '0';
    *p++ = '.';
    for (int k = 12; k >= 0; k--)
        *p++ = hex_digits[(mant >> (4 * k)) & 15];
    int e = exp ? (int)exp - 1023 : -1022;
    *p++ = 'p';
    *p++ = e < 0 ? '-' : '+';
    sae__format_decimal((uint64_t)(e < 0 ? -e : e), p);
}

bool sae__parse_hex_double(const char *s, size_t len, double *out)
{
    size_t pos = 0;
    uint64_t sign = 0;
    if (pos < len && s[pos] == '-') {
        sign = UINT64_C(1) << 63;
        pos++;
    }
    if (len - pos == 8 && memcmp(s + pos, "0x0.0p+0", 8) == 0) {
        memcpy(out, &sign, sizeof *out);
        return true;
    }
    uint64_t mant;
    if (len - pos < 4 + 13 + 3 || memcmp(s + pos, "0x", 2) != 0 ||
        (s[pos + 2] != '0' && s[pos + 2] != '1') || s[pos + 3] != '.' ||
        !sae__parse_hex(s + pos + 4, 13, &mant))
        return false;
    bool normal = s[pos + 2] == '1';
    pos += 4 + 13;
    if (s[pos] != 'p' || (s[pos + 1] != '+' && s[pos + 1] != '-'))
        return false;
    bool negative = s[pos + 1] == '-';
    pos += 2;
    uint64_t e;
    if (!sae__parse_decimal(s + pos, len - pos, 1100, &e))
        return false;
    uint64_t bits;
    if (normal) {
        long ex = negative ? -(long)e : (long)e;
        if (ex < -1022 || ex > 1023)
            return false;
        bits = sign | (uint64_t)(ex + 1023) << 52 | mant;
    } else {
        if (!negative || e != 1022 || mant == 0)
            return false;
        bits = sign | mant;
    }
    memcpy(out, &bits, sizeof *out);
    return true;
}
