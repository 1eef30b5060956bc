/*
 * session.c: session records.
 */
#include "session.h"

#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "mb_win32.h"
#include "section.h"

mb_session *mb_session_new(uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid)
{
	mb_session *s = calloc(1, sizeof(*s));
	struct timespec ts;

	if (s == NULL)
		return NULL;
	s->pipe_id = pipe_id;
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

uint64_t mb_session_free(mb_session *s, bool discard)
{
	uint64_t committed;

	if (s == NULL)
		return 0;
	committed = mb_session_charged(s);
	if (s->section_fd >= 0 && discard) {
		int rv = mb_section_discard(s->section_fd, 0, MB_ADDRESS_LIMIT);
		if (rv < 0)
			mb_log(LOG_WARNING, "session %llu: cannot discard its section: %d",
			       (unsigned long long)s->id, rv);
	}
	mb_section_unmap_credit(s->credit_word);
	if (s->section_fd >= 0)
		close(s->section_fd);
	if (s->pidfd >= 0)
		close(s->pidfd); /* also leaves the death watch's epoll set */
	mb_regmap_clear(&s->map, NULL, NULL);
	free(s->mapped);
	free(s);
	return committed;
}
