/*
 * punch.h: hole punches taken out of the broker lock.
 *
 * Returning written pages to the kernel costs about 1 ms per 8 MiB here. The books decide which
 * pages go (reclaim of MEM_RESET pages, the audit's discard of pages nobody committed) under the
 * broker lock; the punches themselves are queued there, each on a duplicate of the section's
 * descriptor, and run by whoever releases the lock next on the paths that can queue them (the
 * request path before it replies, the audit, the main loop's tick). The books are updated when
 * a punch is queued, so for the moment until it runs the pages are still in memory but no longer
 * charged: physical use can exceed the books by what the queue holds, for the time it takes to
 * punch it.
 *
 * Thread safety: mb_punches_add and mb_punches_take under the broker lock; mb_punches_run without
 * it, on the jobs a take moved out.
 */
#ifndef MB_PUNCH_H
#define MB_PUNCH_H

#include <stdbool.h>
#include <stdint.h>

/* Punches the queue holds at most; a punch that does not fit is done at once, under the lock. */
#define MB_PUNCH_JOBS 64

typedef struct mb_punch_job {
	uint64_t section_id;
	int fd; /* a duplicate of the section's descriptor, owned by the job */
	uint64_t offset, len;
} mb_punch_job;

typedef struct mb_punches {
	mb_punch_job jobs[MB_PUNCH_JOBS];
	int n;
} mb_punches;

/* Queues a punch of [offset, offset+len) of section section_id (descriptor section_fd), joined to
 * the last one when it continues it; punches at once when the queue is full or no descriptor is
 * left to duplicate. */
void mb_punches_add(mb_punches *q, uint64_t section_id, int section_fd, uint64_t offset,
		    uint64_t len);

/* Whether q holds a punch of section section_id: its pages there still hold data the books have
 * let go of, so the audit must not look at it until the punch ran. */
bool mb_punches_pending(const mb_punches *q, uint64_t section_id);

/* Moves the queued punches to out (emptying q). */
void mb_punches_take(mb_punches *q, mb_punches *out);

/* Runs out's punches and closes their descriptors. */
void mb_punches_run(mb_punches *out);

#endif
