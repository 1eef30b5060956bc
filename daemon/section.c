/*
 * section.c: section records.
 */
#include "section.h"

#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "mb_win32.h"
#include "memfd.h"

mb_section *mb_section_new(pid_t pid, uid_t uid, gid_t gid)
{
	mb_section *s = calloc(1, sizeof(*s));
	struct timespec ts;

	if (s == NULL)
		return NULL;
	s->pid = pid;
	s->uid = uid;
	s->gid = gid;
	s->section_fd = -1;
	s->pidfd = -1;
	s->group = -1;
	mb_regmap_init(&s->map, false);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	s->connected = ts.tv_sec;
	return s;
}

void mb_section_free(mb_section *s, bool discard)
{
	if (s == NULL)
		return;
	if (s->section_fd >= 0 && discard) {
		int rv = mb_memfd_discard(s->section_fd, 0, MB_ADDRESS_LIMIT);
		if (rv < 0)
			mb_log(LOG_WARNING, "section %llu: cannot discard its memory: %d",
			       (unsigned long long)s->id, rv);
	}
	mb_memfd_unmap_credit(s->credit_word);
	if (s->section_fd >= 0)
		close(s->section_fd);
	if (s->pidfd >= 0)
		close(s->pidfd); /* also leaves the death watch's epoll set */
	mb_regmap_clear(&s->map, NULL, NULL);
	free(s->mapped);
	s->state = MB_SECTION_FREED;
	free(s);
}

const char *mb_section_state_name(mb_section_state st)
{
	switch (st) {
	case MB_SECTION_ATTACHED:
		return "attached";
	case MB_SECTION_DETACHED:
		return "detached";
	case MB_SECTION_RESTORED:
		return "restored";
	case MB_SECTION_FREED:
		return "freed";
	}
	return "unknown";
}
