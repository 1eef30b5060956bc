/*
 * mb_extent.h: where a section's memfd really holds pages (SEEK_DATA / SEEK_HOLE), in runs coarse
 * enough to act on one at a time.
 *
 * Both sides split a client's committed runs by it when a section is handed back to a broker
 * without books (daemon/readopt.h): the library claims the runs holding data first, and the broker
 * books them first. Holes shorter than a gap inside data are taken as data, so a sparsely written
 * run costs one claim and one booking per stretch, not one per page.
 *
 * Pure functions of the file; no state, no locks.
 */
#ifndef MB_EXTENT_H
#define MB_EXTENT_H

#include <stdint.h>

/* Holes shorter than this between data extents belong to the data run around them. */
#define MB_EXTENT_GAP ((uint64_t)1 << 20)

/*
 * The first data run of fd in [from, to) (page aligned): *start and *end, the data extents from
 * *start on merged across holes shorter than gap, both page aligned and within [from, to).
 * *start == *end == to when [from, to) holds no data. *seeks counts down the lseek calls this may
 * still make: at 0 it reports no more data (callers bound their work with it).
 */
void mb_extent_data(int fd, uint64_t from, uint64_t to, uint64_t gap, unsigned *seeks,
		    uint64_t *start, uint64_t *end);

#endif
