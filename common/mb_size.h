/*
 * mb_size.h: parsing sizes ("512M", "4GiB", "25%").
 */
#ifndef MB_SIZE_H
#define MB_SIZE_H

#include <stdint.h>

/*
 * Parses a size: a byte count with an optional K, M, G or T suffix (powers of 1024, optional "iB"
 * or "B"), or a percentage "N%" of `total`. Returns 0 and *out, or -1 for anything else (empty,
 * negative, trailing junk, overflow, 0%, more than 100%, a percentage of a total of 0).
 */
int mb_parse_size(const char *s, uint64_t total, uint64_t *out);

#endif
