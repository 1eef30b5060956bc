/*
 * restore.c: sections back from systemd's descriptor store at start.
 */
#include "restore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arbiter.h"
#include "books.h"
#include "broker.h"
#include "clock.h"
#include "log.h"
#include "mb_credit.h"
#include "memfd.h"
#include "readopt.h"
#include "snapshot.h"

/* A section memfd found in the store, with its owner's pidfd once matched. */
typedef struct stored {
	uint64_t id;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int fd, pidfd;
	char name[96];
} stored;

static int stored_cmp(const void *a, const void *b)
{
	uint64_t x = ((const stored *)a)->id, y = ((const stored *)b)->id;
	return x < y ? -1 : x > y;
}

/* The snapshot from fd, decoded and checked, or NULL after logging why not. The file is emptied
 * and removed from the store either way: it describes this start only. */
static mb_snapshot *take_snapshot(mb_broker *b, mb_fdstore *st, int fd)
{
	mb_snapshot *snap = NULL;
	char why[256] = "";
	uint8_t *buf;
	size_t len;
	int rv = mb_snapshot_read_fd(fd, &buf, &len, why, sizeof(why));

	if (rv == 0) {
		rv = mb_snapshot_decode(buf, len, b->section_size, &snap, why, sizeof(why));
		free(buf);
	}
	if (rv == -ENOMEM)
		snprintf(why, sizeof(why), "out of memory");
	if (rv != 0)
		mb_log(LOG_ERR,
		       "books snapshot refused: %s; sections are restored from what they hold, "
		       "and their clients register again",
		       why);
	if (ftruncate(fd, 0) != 0)
		mb_log(LOG_WARNING, "cannot empty the used books snapshot: %s", strerror(errno));
	mb_fdstore_forget(st, MB_FDSTORE_SNAPSHOT);
	close(fd);
	return snap;
}

/* The snapshot's section with this id and inode, taken out of it; NULL if none. *stale is set
 * when the id is there but the memfd is another. */
static mb_section *take_exact(mb_snapshot *snap, uint64_t id, int fd, bool *stale)
{
	struct stat st;

	*stale = false;
	for (size_t i = 0; snap != NULL && i < snap->nsections; i++) {
		mb_section *s = snap->sections[i];
		if (s == NULL || s->id != id)
			continue;
		if (fstat(fd, &st) != 0 || (uint64_t)st.st_ino != snap->inodes[i]) {
			*stale = true;
			return NULL;
		}
		snap->sections[i] = NULL;
		return s;
	}
	return NULL;
}

/* Frees a stored section whose process is gone: its pages go back now. */
static void free_stored(mb_fdstore *st, stored *e, const char *why)
{
	char owner[64];

	mb_log(LOG_INFO, "section %" PRIu64 " of pid %d freed at restore: %s", e->id, (int)e->pid,
	       why);
	mb_memfd_discard(e->fd, 0, MB_ADDRESS_LIMIT);
	close(e->fd);
	if (e->pidfd >= 0)
		close(e->pidfd);
	mb_fdstore_forget(st, e->name);
	snprintf(owner, sizeof(owner), "owner-%" PRIu64, e->id);
	mb_fdstore_forget(st, owner);
}

/* Into the registry and the death watch; the books follow (mb_books_enter). */
static void install(mb_broker *b, mb_section *s, stored *e, bool keep_credit)
{
	s->section_fd = e->fd;
	s->pidfd = e->pidfd;
	s->stored = true;
	s->state = MB_SECTION_RESTORED;
	s->credit_word = mb_memfd_map_credit(e->fd, !keep_credit);
	if (s->credit_word == NULL) {
		/* Without the word the credit cannot be read or taken back: it is void. */
		s->credit = 0;
	}
	if (s->adopting)
		s->adopt_deadline_ms = mb_now_ms() + MB_ADOPT_DEADLINE_MS;
	mb_registry_add_section(&b->reg, s);
	if (s->pidfd >= 0 && b->death_epfd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = s->id};
		if (epoll_ctl(b->death_epfd, EPOLL_CTL_ADD, s->pidfd, &ev) != 0)
			mb_log(LOG_WARNING,
			       "section %" PRIu64 ": the death watch cannot follow pid %d", s->id,
			       (int)s->pid);
	}
}

/* A record for a stored section without books: charged later for what it holds. */
static mb_section *bounded_section(const stored *e)
{
	mb_section *s = mb_section_new(e->pid, e->uid, e->gid);

	if (s == NULL)
		return NULL;
	s->id = e->id;
	/* Nobody knows these tokens: its client cannot re-attach, it hands its memfd back. */
	if (getrandom(s->token, sizeof(s->token), 0) != (ssize_t)sizeof(s->token) ||
	    getrandom(s->attach_token, sizeof(s->attach_token), 0) !=
		(ssize_t)sizeof(s->attach_token)) {
		mb_section_free(s, false);
		return NULL;
	}
	s->token_used = true;
	return s;
}

/* The budget the restored books live under (restore.h). */
static uint64_t choose_budget(const mb_snapshot *snap, uint64_t configured, uint64_t exact)
{
	if (snap == NULL)
		return configured;
	if (snap->configured_budget == configured && snap->budget != configured) {
		mb_log(LOG_INFO,
		       "budget %" PRIu64 " MiB as set before the restart (the configuration says "
		       "%" PRIu64 " MiB)",
		       snap->budget >> 20, configured >> 20);
		return snap->budget;
	}
	if (configured < exact) {
		mb_log(LOG_WARNING,
		       "the configured budget of %" PRIu64 " MiB is below the %" PRIu64
		       " MiB the restored sections hold: the budget stays at %" PRIu64 " MiB",
		       configured >> 20, exact >> 20, snap->budget >> 20);
		return snap->budget;
	}
	return configured;
}

void mb_restore(mb_broker *b, mb_fdstore *st, const int *fds, char **names, size_t n,
		uint64_t configured_budget, mb_restore_stats *stats)
{
	stored *sec = calloc(n ? n : 1, sizeof(*sec));
	mb_snapshot *snap = NULL;
	size_t nsec = 0;
	int snapshot_fd = -1;

	memset(stats, 0, sizeof(*stats));
	if (sec == NULL) {
		mb_log(LOG_ERR, "out of memory: the stored sections are not restored");
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
		return;
	}
	/* Sort the descriptors by name: sections, then their owners, the snapshot. */
	for (size_t i = 0; i < n; i++) {
		const char *name = names != NULL && names[i] != NULL ? names[i] : "";
		stored *e = &sec[nsec];
		if (strcmp(name, MB_FDSTORE_SNAPSHOT) == 0 && snapshot_fd < 0) {
			snapshot_fd = fds[i];
		} else if (mb_fdstore_parse_section(name, &e->id, &e->pid, &e->uid, &e->gid)) {
			e->fd = fds[i];
			e->pidfd = -1;
			snprintf(e->name, sizeof(e->name), "%s", name);
			nsec++;
		} else if (strncmp(name, "owner-", 6) == 0) {
			continue; /* matched below */
		} else {
			mb_log(LOG_WARNING,
			       "descriptor %d (\"%s\") from the store is not the broker's", fds[i],
			       name);
			close(fds[i]);
			mb_fdstore_forget(st, name);
			stats->dropped++;
		}
	}
	qsort(sec, nsec, sizeof(*sec), stored_cmp);
	for (size_t i = 0; i < n; i++) {
		uint64_t id;
		const char *name = names != NULL && names[i] != NULL ? names[i] : "";
		if (!mb_fdstore_parse_owner(name, &id))
			continue;
		stored key = {.id = id};
		stored *e = bsearch(&key, sec, nsec, sizeof(*sec), stored_cmp);
		if (e != NULL && e->pidfd < 0) {
			e->pidfd = fds[i];
		} else {
			close(fds[i]);
			mb_fdstore_forget(st, name);
		}
	}
	if (snapshot_fd >= 0) {
		stats->snapshot = true;
		snap = take_snapshot(b, st, snapshot_fd);
		stats->snapshot_used = snap != NULL;
	} else if (nsec > 0) {
		mb_log(LOG_WARNING,
		       "no books snapshot: the previous broker did not stop cleanly; sections are "
		       "restored from what they hold, and their clients register again");
	}

	pthread_mutex_lock(&b->lock);
	/* First the sections with exact books, which decide the budget; then the others, charged
	 * what they hold within what is left. */
	mb_section **bounded = calloc(nsec ? nsec : 1, sizeof(*bounded));
	stored **bounded_e = calloc(nsec ? nsec : 1, sizeof(*bounded_e));
	size_t nbounded = 0;
	uint64_t exact_charged = 0;
	for (size_t i = 0; i < nsec; i++) {
		stored *e = &sec[i];
		bool stale = false;
		if (mb_memfd_check_section(e->fd, b->section_size) != 0) {
			mb_log(LOG_WARNING, "stored descriptor \"%s\" is not a section; dropped",
			       e->name);
			close(e->fd);
			if (e->pidfd >= 0)
				close(e->pidfd);
			mb_fdstore_forget(st, e->name);
			stats->dropped++;
			continue;
		}
		if (e->pidfd < 0) {
			/* Stored together with the memfd, so normally there; a pid that was
			 * reused meanwhile keeps the section charged until that process exits. */
			e->pidfd = (int)syscall(SYS_pidfd_open, e->pid, 0);
			mb_log(LOG_WARNING, "section %" PRIu64 ": no stored pidfd, pid %d %s",
			       e->id, (int)e->pid, e->pidfd >= 0 ? "watched again" : "is gone");
		}
		if (e->pidfd < 0 || mb_pidfd_exited(e->pidfd)) {
			free_stored(st, e, "its process exited while the broker was away");
			stats->freed++;
			continue;
		}
		mb_section *s = take_exact(snap, e->id, e->fd, &stale);
		if (stale)
			mb_log(LOG_WARNING,
			       "section %" PRIu64 ": its memfd is not the one the snapshot saw; "
			       "restored from what it holds",
			       e->id);
		if (s != NULL) {
			install(b, s, e, true);
			exact_charged += mb_section_charged(s);
			stats->exact++;
			continue;
		}
		s = bounded_section(e);
		if (s == NULL || bounded == NULL || bounded_e == NULL) {
			mb_log(LOG_ERR, "out of memory: section %" PRIu64 " is not restored",
			       e->id);
			mb_section_free(s, false);
			close(e->fd);
			close(e->pidfd);
			stats->dropped++;
			continue;
		}
		bounded[nbounded] = s;
		bounded_e[nbounded++] = e;
	}
	for (size_t i = 0; snap != NULL && i < snap->nsections; i++)
		if (snap->sections[i] != NULL) {
			mb_log(LOG_NOTICE,
			       "section %" PRIu64 " of pid %d is in the snapshot but its memfd is "
			       "not in the store; its client registers again",
			       snap->sections[i]->id, (int)snap->sections[i]->pid);
			stats->dropped++;
		}

	b->books.ledger.budget = choose_budget(snap, configured_budget, exact_charged);
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		mb_books_enter(&b->books, s);
	if (snap != NULL) {
		/* MEM_RESET ranges of sections restored exactly, in their queues' order. */
		for (size_t i = 0; i < snap->nresets; i++) {
			const mb_snapshot_reset *r = &snap->resets[i];
			mb_section *s = mb_registry_section(&b->reg, r->section_id);
			mb_reset_range *rr;
			if (s == NULL || s->held > 0 || (rr = calloc(1, sizeof(*rr))) == NULL)
				continue;
			rr->section_id = r->section_id;
			rr->address = r->address;
			rr->pages = r->pages;
			TAILQ_INSERT_TAIL(&b->resets[r->level], rr, link);
		}
		if (snap->next_id > b->reg.next_id)
			b->reg.next_id = snap->next_id;
		b->reclaimed_bytes = snap->reclaimed_bytes;
		b->offences = snap->offences;
	}
	for (size_t i = 0; i < nbounded; i++) {
		mb_section *s = bounded[i];
		stored *e = bounded_e[i];
		uint64_t holds = mb_memfd_data(e->fd, MB_CREDIT_PAGE, b->section_size);
		uint64_t room = b->books.ledger.budget > b->books.ledger.committed
				    ? b->books.ledger.budget - b->books.ledger.committed
				    : 0;
		if (holds > room)
			mb_log(LOG_WARNING,
			       "section %" PRIu64 " of pid %d holds %" PRIu64
			       " KiB, more than the budget has left: %" PRIu64 " KiB are charged",
			       e->id, (int)e->pid, holds >> 10, room >> 10);
		s->held = holds < room ? holds : room;
		install(b, s, e, false);
		mb_books_enter(&b->books, s);
		stats->bounded++;
	}
	/* What the store still holds for this broker, against its capacity. */
	uint32_t kept = 0;
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		kept += 1 + (s->pidfd >= 0);
	mb_fdstore_count_restored(st, kept);
	mb_arbiter_update_pressure(b);
	stats->charged = b->books.ledger.committed;
	stats->budget = b->books.ledger.budget;
	pthread_mutex_unlock(&b->lock);
	free(bounded);
	free(bounded_e);
	mb_snapshot_free(snap);
	free(sec);
}
