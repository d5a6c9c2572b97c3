
/*
 * What the fuzz targets in t/fuzz/ share: an invariant check that aborts
 * (so that libFuzzer and the plain replay driver both see a crash), and a
 * reader that takes typed values off the front of the fuzzer's input.
 */


#ifndef _REPLAY_FUZZ_H_INCLUDED_
#define _REPLAY_FUZZ_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define fuzz_check(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n",                 \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)


typedef struct {
    const uint8_t  *p;
    size_t          left;
} fuzz_input_t;


static inline unsigned
fuzz_u8(fuzz_input_t *in)
{
    if (in->left == 0) {
        return 0;
    }

    in->left--;
    return *in->p++;
}


static inline unsigned
fuzz_u16(fuzz_input_t *in)
{
    unsigned  hi;

    hi = fuzz_u8(in);
    return (hi << 8) | fuzz_u8(in);
}


/*
 * A string of up to "max" bytes: a length byte (two when max > 255), then
 * that many bytes, fewer at the end of the input.  Copied to the heap at
 * its exact size, so that ASan sees a read past it; NULL when empty, as
 * an empty ngx_str_t may be.
 */
static inline unsigned char *
fuzz_str(fuzz_input_t *in, size_t max, size_t *len)
{
    size_t          n;
    unsigned char  *s;

    n = (max > 255) ? fuzz_u16(in) : fuzz_u8(in);
    n %= max + 1;

    if (n > in->left) {
        n = in->left;
    }

    *len = n;

    if (n == 0) {
        return NULL;
    }

    s = malloc(n);
    fuzz_check(s != NULL);

    memcpy(s, in->p, n);
    in->p += n;
    in->left -= n;

    return s;
}


/* the position of needle in haystack, or NULL (memmem for any libc) */
static inline const unsigned char *
fuzz_find(const unsigned char *h, size_t hlen, const unsigned char *n,
    size_t nlen)
{
    size_t  i;

    if (nlen == 0 || nlen > hlen) {
        return NULL;
    }

    for (i = 0; i + nlen <= hlen; i++) {
        if (h[i] == n[0] && memcmp(h + i, n, nlen) == 0) {
            return h + i;
        }
    }

    return NULL;
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#endif /* _REPLAY_FUZZ_H_INCLUDED_ */
