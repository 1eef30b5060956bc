/*
 * arbiter.c: what the broker does when memory is short: waiting commits, their grants, reclaim of
 * MEM_RESET pages, memory-pressure notifications, and the audit that keeps charging honest.
 *
 * Everything here runs with the broker lock held.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "credit.h"
#include "log.h"
#include "mb_win32.h"
#include "mb_credit.h"
#include "section.h"

/* Offences after which a client that writes to memory it never committed is disconnected. */
#define MB_MAX_OFFENCES 3

uint64_t mb_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void mb_broker_finish_parked(mb_broker *b, mb_parked *p, HRESULT hr, const char *detail)
{
	if (p->state != MB_PARK_WAITING)
		return;
	if (p->kind == MB_PARK_COMMIT) {
		TAILQ_REMOVE(&b->waiters[p->level], p, link);
		b->nwaiters--;
	} else {
		TAILQ_REMOVE(&b->watchers, p, link);
	}
	p->state = MB_PARK_DONE;
	p->result = hr;
	snprintf(p->detail, sizeof(p->detail), "%s", detail ? detail : "");
	p->wake(p);
}

void mb_broker_update_pressure(mb_broker *b)
{
	/* Pressure is about memory in use: unused commit credit is held, not used (and it is taken
	 * back when memory runs short), so it does not count here; credit used by local commits not
	 * yet reported does. */
	mb_ledger used = b->ledger;
	bool waiters = b->nwaiters > 0;
	int next = mb_pressure_next(b->pressure, &used, waiters);
	mb_parked *p, *tmp;

	/* Memory in use lies between the ledger less all credit and the ledger itself, and the
	 * level only falls as use grows: when both ends give the same level, so does the exact
	 * figure, and this runs on every commit without reading every session's word. */
	if (b->credit_total > 0) {
		uint64_t total = b->ledger.committed;
		used.committed = total - (b->credit_total < total ? b->credit_total : total);
		if (mb_pressure_next(b->pressure, &used, waiters) != next) {
			uint64_t unused = mb_broker_credit_unused_total(b);
			used.committed = total - (unused < total ? unused : total);
			next = mb_pressure_next(b->pressure, &used, waiters);
		}
	}

	if (next == b->pressure)
		return;
	if (next == 1)
		mb_broker_credit_revoke_all(b);
	mb_log(LOG_INFO,
	       "memory pressure %s: %" PRIu64 " of %" PRIu64 " bytes committed, %u waiting",
	       next == 1   ? "low memory"
	       : next == 2 ? "neutral"
			   : "high memory",
	       b->ledger.committed, b->ledger.budget, b->nwaiters);
	b->pressure = next;
	/* Low goes to the holders of the lowest level first: they are the ones expected to give
	 * memory back, so they hear it before anyone else. */
	for (int level = 0; level < MB_LEVELS; level++) {
		TAILQ_FOREACH_SAFE(p, &b->watchers, link, tmp) {
			mb_session *s = mb_broker_find_pipe(b, p->pipe_id);
			int owner_level = s ? s->max_level : 0;
			if (owner_level == level ||
			    (level == MB_LEVELS - 1 && owner_level >= level))
				mb_broker_finish_parked(b, p, S_OK, NULL);
		}
	}
}

long mb_broker_commit_pages(mb_broker *b, mb_session *s, const mb_page_range *pr, int level)
{
	long gained = mb_region_commit(&s->map, pr->region, pr->first, pr->count, 0);

	if (gained < 0)
		return -1;
	mb_broker_charge(b, s, (uint64_t)gained * MB_PAGE_SIZE);
	if (level > s->max_level)
		s->max_level = level;
	return gained;
}

/* Tries one waiting commit. Returns true when it finished (granted or failed for good). */
static bool try_grant(mb_broker *b, mb_parked *p)
{
	mb_session *s = mb_broker_find_pipe(b, p->pipe_id);
	mb_page_range pr;
	uint64_t bytes;

	if (s == NULL) {
		b->waits_abandoned++;
		mb_broker_finish_parked(b, p, HOST_E_ABANDONED, "the client disconnected");
		return true;
	}
	/* The session may have released or committed the range while this commit waited. */
	if (mb_win32_plan_range(&s->map, (uintptr_t)p->address, (size_t)p->size, &pr) != S_OK) {
		mb_broker_finish_parked(b, p, MB_E_INVALID_ADDRESS,
					"the reservation was released while the commit waited");
		return true;
	}
	bytes = (uint64_t)(pr.count - mb_region_committed_in(pr.region, pr.first, pr.count)) *
		MB_PAGE_SIZE;
	mb_fit fit = bytes > 0 ? mb_broker_fits(b, s, p->level, bytes) : MB_FIT_OK;
	if (fit != MB_FIT_OK && mb_broker_credit_revoke_for(b, s, fit) > 0)
		fit = mb_broker_fits(b, s, p->level, bytes);
	if (fit == MB_FIT_CEILING)
		return false;
	if (fit != MB_FIT_OK) {
		/* Its own or its group's limit: more waiting would not help. */
		b->refusals++;
		mb_broker_finish_parked(b, p, E_OUTOFMEMORY, "over the client's or group's limit");
		return true;
	}
	if (mb_broker_commit_pages(b, s, &pr, p->level) < 0) {
		mb_broker_finish_parked(b, p, E_OUTOFMEMORY, "no memory for page state");
		return true;
	}
	b->waits_granted++;
	mb_broker_finish_parked(b, p, S_OK, NULL);
	return true;
}

void mb_broker_grant_waiters(mb_broker *b)
{
	mb_parked *p, *tmp;

	/* Highest level first, oldest first within a level; a waiter that does not fit is skipped,
	 * so a large request never holds up smaller ones behind it. */
	for (int level = MB_LEVELS - 1; level >= 0; level--)
		TAILQ_FOREACH_SAFE(p, &b->waiters[level], link, tmp)
			try_grant(b, p);
	mb_broker_update_pressure(b);
}

/* Discards the still-reset pages of one range. Returns the bytes credited. */
static uint64_t discard_reset_range(mb_broker *b, mb_reset_range *r)
{
	mb_session *s = mb_broker_find_pipe(b, r->pipe_id);
	mb_region *region;
	uint64_t credited = 0;

	if (s == NULL)
		return 0;
	s->resets--;
	region = mb_regmap_find(&s->map, (uintptr_t)r->address);
	if (region == NULL)
		return 0;
	size_t first = mb_region_page(region, (uintptr_t)r->address);
	size_t end = first + r->pages;
	if (end > region->size / MB_PAGE_SIZE)
		end = region->size / MB_PAGE_SIZE;
	const uint8_t cr = MB_PAGE_COMMITTED | MB_PAGE_RESET;
	for (size_t i = mb_region_find(region, first, end, cr, cr); i < end;
	     i = mb_region_find(region, i, end, cr, cr)) {
		/* A run of reset pages: one hole punch. */
		size_t j = mb_region_run_end(region, i, end, cr, cr), lost = 0;
		mb_region_update(&s->map, region, i, j - i, cr, cr, MB_PAGE_COMMITTED,
				 MB_PAGE_DISCARDED, -1, &lost);
		mb_section_discard(s->section_fd, region->base + (uint64_t)i * MB_PAGE_SIZE,
				   (uint64_t)(j - i) * MB_PAGE_SIZE);
		credited += (uint64_t)lost * MB_PAGE_SIZE;
		i = j;
	}
	mb_broker_credit(b, s, credited);
	return credited;
}

uint64_t mb_broker_reclaim(mb_broker *b, const mb_session *s, uint64_t need, int level)
{
	uint64_t credited = 0;
	mb_reset_range *r;

	for (int owner = 0; owner < MB_LEVELS; owner++) {
		while ((r = TAILQ_FIRST(&b->resets[owner])) != NULL) {
			if (mb_broker_fits(b, s, level, need) != MB_FIT_CEILING)
				goto done;
			TAILQ_REMOVE(&b->resets[owner], r, link);
			credited += discard_reset_range(b, r);
			free(r);
		}
	}
done:
	if (credited > 0) {
		b->reclaimed_bytes += credited;
		mb_log_event(LOG_INFO, MB_MSGID_RECLAIM, (int)s->pid, (unsigned)s->uid, level,
			     (unsigned long long)credited, 0,
			     "reclaimed %" PRIu64 " KiB of MEM_RESET pages for a commit",
			     credited >> 10);
	}
	return credited;
}

uint32_t mb_broker_abandon_all(mb_broker *b)
{
	uint32_t n = 0;
	mb_parked *p;

	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	for (int level = 0; level < MB_LEVELS; level++)
		while ((p = TAILQ_FIRST(&b->waiters[level])) != NULL) {
			b->waits_abandoned++;
			mb_broker_finish_parked(b, p, HOST_E_ABANDONED,
						"the broker is shutting down");
			n++;
		}
	while ((p = TAILQ_FIRST(&b->watchers)) != NULL) {
		mb_broker_finish_parked(b, p, S_OK, NULL);
		n++;
	}
	pthread_mutex_unlock(&b->lock);
	return n;
}

void mb_broker_expire_parked(mb_broker *b, mb_parked *p)
{
	if (p->state != MB_PARK_WAITING)
		return;
	if (p->kind == MB_PARK_WATCH) {
		mb_broker_finish_parked(b, p, S_OK, NULL); /* answered with the current level */
		return;
	}
	mb_session *s = mb_broker_find_pipe(b, p->pipe_id);
	b->waits_timed_out++;
	mb_log_event(LOG_NOTICE, MB_MSGID_TIMEOUT, s ? (int)s->pid : 0, s ? (unsigned)s->uid : 0,
		     p->level, (unsigned long long)p->size, (unsigned)HOST_E_TIMEOUT,
		     "waiting commit timed out");
	mb_broker_finish_parked(b, p, HOST_E_TIMEOUT,
				"waited for memory until the level's deadline");
	mb_broker_update_pressure(b);
}

uint64_t mb_broker_expire(mb_broker *b, uint64_t now)
{
	uint64_t next = 0;
	mb_parked *p, *tmp;

	pthread_mutex_lock(&b->lock);
	for (int level = 0; level < MB_LEVELS; level++)
		TAILQ_FOREACH_SAFE(p, &b->waiters[level], link, tmp) {
			if (p->deadline_ms <= now)
				mb_broker_expire_parked(b, p);
			else if (next == 0 || p->deadline_ms < next)
				next = p->deadline_ms;
		}
	TAILQ_FOREACH_SAFE(p, &b->watchers, link, tmp) {
		if (p->deadline_ms <= now)
			mb_broker_expire_parked(b, p);
		else if (next == 0 || p->deadline_ms < next)
			next = p->deadline_ms;
	}
	pthread_mutex_unlock(&b->lock);
	return next;
}

uint32_t mb_broker_parked(mb_broker *b)
{
	uint32_t n;
	mb_parked *p;

	pthread_mutex_lock(&b->lock);
	n = b->nwaiters;
	TAILQ_FOREACH(p, &b->watchers, link)
		n++;
	pthread_mutex_unlock(&b->lock);
	return n;
}

/*
 * Audits one session: every allocated extent of its section (SEEK_DATA / SEEK_HOLE) must lie on
 * committed pages. Returns the bytes discarded.
 */
static uint64_t audit_session(mb_broker *b, mb_session *s, bool *close, bool forgive)
{
	/* Read before the credit word: a client takes credit before it writes a local commit and
	 * gives it back only after punching the pages out, so nothing allocated here is missed. */
	uint64_t allocated = mb_session_allocated(s);
	uint64_t discarded = 0, offending = 0;
	off_t pos = 0;
	/* Pages the client committed by itself against its credit are not in the map until it
	 * reports them: that many written, uncommitted pages of its reservations are those local
	 * commits, not offences. */
	uint64_t tolerated = 0, local = mb_broker_credit_used(s);
	const bool credit_page = s->credit_word != NULL;

	/* The common case costs one fstat: no more pages than commits means nothing to look at. */
	if (allocated <= mb_session_committed(s) + local)
		return 0;
	for (;;) {
		off_t data = lseek(s->section_fd, pos, SEEK_DATA);
		if (data < 0)
			break;
		off_t hole = lseek(s->section_fd, data, SEEK_HOLE);
		if (hole < 0)
			break;
		uint64_t run = UINT64_MAX; /* start of a run of pages to discard */
		uint64_t end = ((uint64_t)hole + MB_PAGE_SIZE - 1) & ~(uint64_t)(MB_PAGE_SIZE - 1);
		for (uint64_t a = (uint64_t)data & ~(uint64_t)(MB_PAGE_SIZE - 1); a <= end;
		     a += MB_PAGE_SIZE) {
			bool drop = false;
			if (a < end && a == MB_CREDIT_OFFSET && credit_page) {
				drop = false; /* the credit word */
			} else if (a < end) {
				mb_region *region = mb_regmap_find(&s->map, (uintptr_t)a);
				size_t pg = region ? mb_region_page(region, (uintptr_t)a) : 0;
				uint8_t st = region ? mb_region_state(region, pg) : 0;
				if (region != NULL && (st & MB_PAGE_COMMITTED)) {
					drop = false;
				} else if (region != NULL && st == 0 &&
					   (tolerated + MB_PAGE_SIZE <= local ||
					    tolerated + MB_PAGE_SIZE <=
						(local = mb_broker_credit_used(s)))) {
					/* A local commit (the word is read again before calling it
					 * an offence: the client may have made one since). */
					tolerated += MB_PAGE_SIZE;
				} else if (region != NULL && (st & MB_PAGE_DISCARDED) &&
					   mb_broker_fits(b, s, MB_LEVELS - 1, MB_PAGE_SIZE) ==
					       MB_FIT_OK &&
					   mb_region_commit(&s->map, region, pg, 1, 0) == 1) {
					/* Win32 lets a program write to MEM_RESET pages: the page
					 * is in use again, so it is charged again. */
					mb_broker_charge(b, s, MB_PAGE_SIZE);
				} else {
					drop = true;
					if (region == NULL || !(st & MB_PAGE_DISCARDED))
						offending += MB_PAGE_SIZE;
				}
			}
			if (drop && run == UINT64_MAX)
				run = a;
			if (!drop && run != UINT64_MAX) {
				mb_section_discard(s->section_fd, run, a - run);
				discarded += a - run;
				run = UINT64_MAX;
			}
		}
		pos = hole;
	}
	if (offending > 0 && forgive) {
		mb_log(LOG_INFO,
		       "client pid %d: dropped %" PRIu64 " KiB its previous broker had not "
		       "seen decommitted",
		       (int)s->pid, offending >> 10);
	} else if (offending > 0) {
		s->offences++;
		b->offences++;
		mb_log_event(LOG_WARNING, MB_MSGID_OFFENCE, (int)s->pid, (unsigned)s->uid,
			     s->max_level, (unsigned long long)offending, 0,
			     "client wrote %" PRIu64
			     " KiB it had not committed; discarded (offence %u "
			     "of %d)",
			     offending >> 10, s->offences, MB_MAX_OFFENCES);
		if (s->offences >= MB_MAX_OFFENCES)
			*close = true;
	}
	return discarded;
}

uint64_t mb_broker_audit(mb_broker *b)
{
	uint64_t discarded = 0;
	uint32_t to_close[16];
	int nclose = 0;
	void (*close_pipe)(void *, uint32_t);
	void *close_arg;

	pthread_mutex_lock(&b->lock);
	for (mb_session *s = mb_broker_first(b); s != NULL; s = mb_broker_next(s)) {
		bool close = false;
		if (!s->hello || s->adopting)
			continue;
		discarded += audit_session(b, s, &close, false);
		if (close && nclose < (int)(sizeof(to_close) / sizeof(to_close[0]))) {
			mb_log(LOG_WARNING, "disconnecting client pid %d after repeated offences",
			       (int)s->pid);
			mb_broker_ban(b, s);
			to_close[nclose++] = s->pipe_id;
		}
	}
	mb_broker_grant_waiters(b);
	close_pipe = b->close_pipe;
	close_arg = b->close_pipe_arg;
	pthread_mutex_unlock(&b->lock);
	/* Outside the lock: nng's pipe callbacks take it (see mb_broker_process_exited). More
	 * offenders than fit here are closed at the next audit. */
	for (int i = 0; i < nclose && close_pipe != NULL; i++)
		close_pipe(close_arg, to_close[i]);
	return discarded;
}

mb_fit mb_broker_fits(mb_broker *b, const mb_session *s, int level, uint64_t bytes)
{
	mb_quota_view q = {.client_committed = mb_session_charged(s),
			   .client_max = b->conf.client_max};

	for (int i = 0; i < b->conf.ngroups; i++) {
		const mb_group_conf *g = &b->conf.groups[i];
		if (i == s->group) {
			q.group_committed = b->group_committed[i];
			q.group_max = g->max;
		} else if (g->reserve > b->group_committed[i]) {
			q.others_reserve_unused += g->reserve - b->group_committed[i];
		}
	}
	return mb_ledger_check(&b->ledger, level, bytes, &q);
}

void mb_broker_charge(mb_broker *b, mb_session *s, uint64_t bytes)
{
	mb_ledger_charge(&b->ledger, bytes);
	if (s->group >= 0)
		b->group_committed[s->group] += bytes;
}

void mb_broker_credit(mb_broker *b, mb_session *s, uint64_t bytes)
{
	mb_ledger_credit(&b->ledger, bytes);
	if (s->group >= 0)
		b->group_committed[s->group] -=
		    bytes > b->group_committed[s->group] ? b->group_committed[s->group] : bytes;
}

void mb_broker_assign_group(mb_broker *b, mb_session *s)
{
	s->group = mb_config_match_group(&b->conf, s->uid, s->gid, s->name);
	if (s->group >= 0) {
		b->group_committed[s->group] += mb_session_charged(s);
		b->group_sessions[s->group]++;
	}
}

void mb_broker_apply_config(mb_broker *b, const mb_config *conf)
{
	pthread_mutex_lock(&b->lock);
	/* Take all credit back first: a smaller amount or none may be configured now, and the
	 * groups are recomputed from the sessions' charges below. */
	mb_broker_credit_revoke_all(b);
	b->conf = *conf;
	memset(b->group_committed, 0, sizeof(b->group_committed));
	memset(b->group_sessions, 0, sizeof(b->group_sessions));
	for (mb_session *s = mb_broker_first(b); s != NULL; s = mb_broker_next(s))
		if (s->hello)
			mb_broker_assign_group(b, s);
	mb_broker_grant_waiters(b);
	pthread_mutex_unlock(&b->lock);
}

void mb_broker_ban(mb_broker *b, const mb_session *s)
{
	int fd;

	if (s->pidfd < 0 || mb_broker_banned(b, s->pid))
		return;
	if (b->nbanned == (int)(sizeof(b->banned) / sizeof(b->banned[0]))) {
		/* Full: the oldest ban gives way. */
		close(b->banned[0].pidfd);
		memmove(&b->banned[0], &b->banned[1],
			sizeof(b->banned[0]) * (size_t)(b->nbanned - 1));
		b->nbanned--;
	}
	fd = fcntl(s->pidfd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return;
	b->banned[b->nbanned].pid = s->pid;
	b->banned[b->nbanned].pidfd = fd;
	b->nbanned++;
}

bool mb_broker_banned(mb_broker *b, pid_t pid)
{
	bool found = false;

	for (int i = 0; i < b->nbanned;) {
		if (mb_pidfd_exited(b->banned[i].pidfd)) {
			/* The process exited: its pid may be reused by an innocent one. */
			close(b->banned[i].pidfd);
			b->banned[i] = b->banned[--b->nbanned];
			continue;
		}
		found |= b->banned[i].pid == pid;
		i++;
	}
	return found;
}

void mb_broker_adoption_done(mb_broker *b, mb_session *s)
{
	bool close = false;

	if (!s->adopting)
		return;
	s->adopting = false;
	audit_session(b, s, &close, true);
}
