/*
 * punch.c: hole punches taken out of the broker lock (punch.h).
 */
#include "punch.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "memfd.h"

void mb_punches_add(mb_punches *q, uint64_t section_id, int section_fd, uint64_t offset,
		    uint64_t len)
{
	mb_punch_job *last = q->n > 0 ? &q->jobs[q->n - 1] : NULL;
	int fd = -1;

	if (len == 0)
		return;
	/* Reclaim and the audit go through a section in order, a run (or a chunk) at a time. */
	if (last != NULL && last->section_id == section_id && last->offset + last->len == offset) {
		last->len += len;
		return;
	}
	if (q->n < MB_PUNCH_JOBS)
		fd = fcntl(section_fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		mb_memfd_discard(section_fd, offset, len);
		return;
	}
	q->jobs[q->n++] =
	    (mb_punch_job){.section_id = section_id, .fd = fd, .offset = offset, .len = len};
}

bool mb_punches_pending(const mb_punches *q, uint64_t section_id)
{
	for (int i = 0; i < q->n; i++)
		if (q->jobs[i].section_id == section_id)
			return true;
	return false;
}

void mb_punches_take(mb_punches *q, mb_punches *out)
{
	out->n = q->n;
	memcpy(out->jobs, q->jobs, (size_t)q->n * sizeof(q->jobs[0]));
	q->n = 0;
}

void mb_punches_run(mb_punches *out)
{
	for (int i = 0; i < out->n; i++) {
		mb_memfd_discard(out->jobs[i].fd, out->jobs[i].offset, out->jobs[i].len);
		close(out->jobs[i].fd);
	}
	out->n = 0;
}
