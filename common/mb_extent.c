/*
 * mb_extent.c: data runs of a file (see mb_extent.h).
 */
#include "mb_extent.h"

#include <unistd.h>

#define PAGE ((uint64_t)4096)

/* The next data extent at or after pos, clipped to to: [*ds, *de), page aligned; false if none
 * (or out of seeks). */
static int next_extent(int fd, uint64_t pos, uint64_t to, unsigned *seeks, uint64_t *ds,
		       uint64_t *de)
{
	if (*seeks < 2)
		return 0;
	*seeks -= 2;
	off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
	if (d < 0 || (uint64_t)d >= to)
		return 0;
	*ds = (uint64_t)d & ~(PAGE - 1);
	if (*ds < pos)
		*ds = pos;
	off_t h = lseek(fd, d, SEEK_HOLE);
	*de = h < 0 || (uint64_t)h >= to ? to : ((uint64_t)h + PAGE - 1) & ~(PAGE - 1);
	if (*de > to)
		*de = to;
	return 1;
}

void mb_extent_data(int fd, uint64_t from, uint64_t to, uint64_t gap, unsigned *seeks,
		    uint64_t *start, uint64_t *end)
{
	uint64_t ds, de, ns, ne;

	*start = *end = to;
	if (from >= to || !next_extent(fd, from, to, seeks, &ds, &de))
		return;
	while (gap > 0 && de < to && next_extent(fd, de, to, seeks, &ns, &ne) && ns - de < gap)
		de = ne;
	*start = ds;
	*end = de;
}
