/*
 * clock.h: the broker's one clock: CLOCK_MONOTONIC in milliseconds (deadlines, grace periods,
 * probe intervals). A leaf: includes nothing of the daemon's.
 */
#ifndef MB_CLOCK_H
#define MB_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t mb_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
