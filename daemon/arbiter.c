/*
 * arbiter.c: waiting commits, their grants, reclaim of MEM_RESET pages and memory pressure.
 */
#include "arbiter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "credit.h"
#include "log.h"
#include "mb_win32.h"
#include "memfd.h"

/* Most MEM_RESET ranges one session may have queued for reclaim; later ones stay reset but are
 * not reclaimed, which only makes the broker less able to help, never wrong. */
#define MB_MAX_RESET_RANGES 65536

static bool anything_reclaimable(const mb_broker *b)
{
	for (int level = 0; level < MB_LEVELS; level++)
		if (!TAILQ_EMPTY(&b->resets[level]))
			return true;
	return false;
}

mb_decision mb_arbiter_decide(mb_broker *b, mb_section *s, int level, uint64_t bytes, bool waiting,
			      bool parkable)
{
	mb_decision_in in = {
	    .bytes = bytes,
	    .ceiling = mb_ledger_ceiling(&b->books.ledger, level),
	    .wait_ms = b->books.ledger.wait_ms[level],
	    .waiting = waiting,
	    .parkable = parkable,
	    .stopping = b->stopping,
	};

	for (;;) {
		mb_decision d;

		in.fit = bytes > 0 ? mb_books_fits(&b->books, s, level, bytes) : MB_FIT_OK;
		in.credit_in_way = mb_credit_in_way(&b->books, s, in.fit);
		in.reclaimable = anything_reclaimable(b);
		d = mb_decide(&in);
		switch (d.verdict) {
		case MB_VERDICT_TAKE_CREDIT:
			mb_credit_take_back_for(&b->books, &b->reg, s, in.fit);
			in.credit_taken = true;
			continue;
		case MB_VERDICT_RECLAIM:
			mb_arbiter_reclaim(b, s, bytes, level);
			in.reclaimed = true;
			continue;
		default:
			return d;
		}
	}
}

/* Bytes of pr's pages not committed (what committing them charges). */
static uint64_t uncommitted(const mb_page_range *pr)
{
	return (uint64_t)(pr->count - mb_region_committed_in(pr->region, pr->first, pr->count)) *
	       MB_PAGE_SIZE;
}

mb_decision mb_arbiter_decide_pages(mb_broker *b, mb_section *s, int level, const mb_page_range *pr,
				    bool waiting, bool parkable)
{
	for (;;) {
		uint64_t bytes = uncommitted(pr);
		mb_decision d = mb_arbiter_decide(b, s, level, bytes, waiting, parkable);
		if (d.verdict != MB_VERDICT_GRANT || uncommitted(pr) <= bytes)
			return d;
	}
}

void mb_arbiter_park(mb_broker *b, mb_parked *p, uint32_t pipe_id, uint64_t request_id, uint32_t ms)
{
	p->state = MB_PARK_WAITING;
	p->pipe_id = pipe_id;
	p->request_id = request_id;
	p->seq = b->next_seq++;
	p->deadline_ms = mb_now_ms() + ms;
	p->result = S_OK;
	p->detail[0] = '\0';
	if (p->kind == MB_PARK_COMMIT) {
		TAILQ_INSERT_TAIL(&b->waiters[p->level], p, link);
		b->nwaiters++;
	} else {
		TAILQ_INSERT_TAIL(&b->watchers, p, link);
	}
	p->arm(p, ms);
}

void mb_arbiter_finish(mb_broker *b, mb_parked *p, HRESULT hr, const char *detail)
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

void mb_arbiter_update_pressure(mb_broker *b)
{
	int next = mb_pressure_in_use(&b->books, &b->reg, b->pressure, b->nwaiters > 0);
	mb_parked *p, *tmp;

	if (next == b->pressure)
		return;
	if (next == 1)
		mb_credit_take_back_all(&b->books, &b->reg);
	mb_log(LOG_INFO, "memory pressure %s: %" PRIu64 " of %" PRIu64 " bytes in use, %u waiting",
	       next == 1   ? "low memory"
	       : next == 2 ? "neutral"
			   : "high memory",
	       mb_memory_in_use(&b->books, &b->reg), b->books.ledger.budget, b->nwaiters);
	b->pressure = next;
	/* Low goes to the holders of the lowest level first: they are the ones expected to give
	 * memory back, so they hear it before anyone else. */
	for (int level = 0; level < MB_LEVELS; level++) {
		TAILQ_FOREACH_SAFE(p, &b->watchers, link, tmp) {
			mb_section *s = mb_registry_by_pipe(&b->reg, p->pipe_id);
			int owner_level = s ? s->max_level : 0;
			if (owner_level == level ||
			    (level == MB_LEVELS - 1 && owner_level >= level))
				mb_arbiter_finish(b, p, S_OK, NULL);
		}
	}
}

/* Tries one waiting commit. Returns true when it finished (granted or failed for good). */
static bool try_grant(mb_broker *b, mb_parked *p)
{
	mb_section *s = mb_registry_by_pipe(&b->reg, p->pipe_id);
	mb_page_range pr;

	if (s == NULL) {
		b->waits_abandoned++;
		mb_arbiter_finish(b, p, HOST_E_ABANDONED, "the client disconnected");
		return true;
	}
	/* The session may have released or committed the range while this commit waited. */
	if (mb_win32_plan_range(&s->map, (uintptr_t)p->address, (size_t)p->size, &pr) != S_OK) {
		mb_arbiter_finish(b, p, MB_E_INVALID_ADDRESS,
				  "the reservation was released while the commit waited");
		return true;
	}
	mb_decision d = mb_arbiter_decide_pages(b, s, p->level, &pr, true, false);
	switch (d.verdict) {
	case MB_VERDICT_PARK:
		return false;
	case MB_VERDICT_GRANT:
		if (mb_books_commit_pages(&b->books, s, &pr, p->level) < 0) {
			mb_arbiter_finish(b, p, E_OUTOFMEMORY, "no memory for page state");
			return true;
		}
		b->waits_granted++;
		mb_arbiter_finish(b, p, S_OK, NULL);
		return true;
	default:
		if (d.reason == MB_REASON_STOPPING) {
			b->waits_abandoned++;
			mb_arbiter_finish(b, p, HOST_E_ABANDONED, mb_reason_text(d.reason));
			return true;
		}
		/* Its own or its group's limit (or a budget lowered under it): more waiting
		 * would not help. */
		b->refusals++;
		mb_arbiter_finish(b, p, E_OUTOFMEMORY, mb_reason_text(d.reason));
		return true;
	}
}

void mb_arbiter_grant_waiters(mb_broker *b)
{
	mb_parked *p, *tmp;

	/* Highest level first, oldest first within a level; a waiter that does not fit is skipped,
	 * so a large request never holds up smaller ones behind it. */
	for (int level = MB_LEVELS - 1; level >= 0; level--)
		TAILQ_FOREACH_SAFE(p, &b->waiters[level], link, tmp)
			try_grant(b, p);
	mb_arbiter_update_pressure(b);
}

/* Discards the still-reset pages of one range. Returns the bytes refunded. */
static uint64_t discard_reset_range(mb_broker *b, mb_reset_range *r)
{
	mb_section *s = mb_registry_section(&b->reg, r->section_id);
	mb_region *region;
	uint64_t refunded = 0;
	size_t kept = 0;
	static mb_log_limit kept_log = MB_LOG_LIMIT_INIT;

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
		/* A run of reset pages within one chunk of page state: one hole punch. */
		size_t j = mb_region_run_end(region, i, end, cr, cr), lost = 0;
		size_t chunk_end = (i | (MB_CHUNK_PAGES - 1)) + 1;
		if (j > chunk_end)
			j = chunk_end;
		if (s->map.idle_chunks >= MB_SECTION_MAX_IDLE_CHUNKS &&
		    region->chunks[i >> MB_CHUNK_SHIFT]->committed == j - i) {
			/* Its chunk would hold nothing charged: keep these pages (still charged).
			 */
			kept += j - i;
			i = j;
			continue;
		}
		mb_region_update(&s->map, region, i, j - i, cr, cr, MB_PAGE_COMMITTED,
				 MB_PAGE_DISCARDED, -1, &lost);
		mb_memfd_discard(s->section_fd, region->base + (uint64_t)i * MB_PAGE_SIZE,
				 (uint64_t)(j - i) * MB_PAGE_SIZE);
		refunded += (uint64_t)lost * MB_PAGE_SIZE;
		i = j;
	}
	if (kept > 0)
		mb_log_limited(
		    &kept_log, LOG_NOTICE,
		    "pid %d: %zu KiB of MEM_RESET pages kept (not reclaimed): its section "
		    "holds %zu chunks of page state for discarded pages, the most allowed",
		    (int)s->pid, kept * (MB_PAGE_SIZE >> 10), s->map.idle_chunks);
	mb_books_refund(&b->books, s, refunded);
	return refunded;
}

uint64_t mb_arbiter_reclaim(mb_broker *b, const mb_section *s, uint64_t need, int level)
{
	uint64_t refunded = 0;
	mb_reset_range *r;

	for (int owner = 0; owner < MB_LEVELS; owner++) {
		while ((r = TAILQ_FIRST(&b->resets[owner])) != NULL) {
			if (mb_books_fits(&b->books, s, level, need) != MB_FIT_CEILING)
				goto done;
			TAILQ_REMOVE(&b->resets[owner], r, link);
			refunded += discard_reset_range(b, r);
			free(r);
		}
	}
done:
	if (refunded > 0) {
		b->reclaimed_bytes += refunded;
		mb_log_event(LOG_INFO, MB_MSGID_RECLAIM, (int)s->pid, (unsigned)s->uid, level,
			     (unsigned long long)refunded, 0,
			     "reclaimed %" PRIu64 " KiB of MEM_RESET pages for a commit",
			     refunded >> 10);
	}
	return refunded;
}

void mb_arbiter_queue_reset(mb_broker *b, mb_section *s, const mb_page_range *pr)
{
	mb_reset_range *rr;

	if (s->resets >= MB_MAX_RESET_RANGES || (rr = calloc(1, sizeof(*rr))) == NULL)
		return;
	rr->section_id = s->id;
	rr->address = pr->start;
	rr->pages = pr->count;
	TAILQ_INSERT_TAIL(&b->resets[s->max_level], rr, link);
	s->resets++;
}

void mb_arbiter_drop_conn(mb_broker *b, uint32_t pipe_id, bool watches)
{
	mb_parked *p, *ptmp;

	for (int level = 0; level < MB_LEVELS; level++)
		TAILQ_FOREACH_SAFE(p, &b->waiters[level], link, ptmp)
			if (p->pipe_id == pipe_id) {
				b->waits_abandoned++;
				mb_arbiter_finish(b, p, HOST_E_ABANDONED,
						  "the client disconnected");
			}
	if (!watches)
		return;
	TAILQ_FOREACH_SAFE(p, &b->watchers, link, ptmp)
		if (p->pipe_id == pipe_id)
			mb_arbiter_finish(b, p, S_OK, NULL);
}

void mb_arbiter_drop_section(mb_broker *b, mb_section *s)
{
	mb_reset_range *r, *rtmp;

	for (int level = 0; level < MB_LEVELS && s->resets > 0; level++)
		TAILQ_FOREACH_SAFE(r, &b->resets[level], link, rtmp)
			if (r->section_id == s->id) {
				TAILQ_REMOVE(&b->resets[level], r, link);
				free(r);
				s->resets--;
			}
}

void mb_arbiter_expire_parked(mb_broker *b, mb_parked *p)
{
	if (p->state != MB_PARK_WAITING)
		return;
	if (p->kind == MB_PARK_WATCH) {
		mb_arbiter_finish(b, p, S_OK, NULL); /* answered with the current level */
		return;
	}
	mb_section *s = mb_registry_by_pipe(&b->reg, p->pipe_id);
	b->waits_timed_out++;
	mb_log_event(LOG_NOTICE, MB_MSGID_TIMEOUT, s ? (int)s->pid : 0, s ? (unsigned)s->uid : 0,
		     p->level, (unsigned long long)p->size, (unsigned)HOST_E_TIMEOUT,
		     "waiting commit timed out");
	mb_arbiter_finish(b, p, HOST_E_TIMEOUT, "waited for memory until the level's deadline");
	mb_arbiter_update_pressure(b);
}

uint64_t mb_arbiter_expire(mb_broker *b, uint64_t now)
{
	uint64_t next = 0;
	mb_parked *p, *tmp;

	for (int level = 0; level < MB_LEVELS; level++)
		TAILQ_FOREACH_SAFE(p, &b->waiters[level], link, tmp) {
			if (p->deadline_ms <= now)
				mb_arbiter_expire_parked(b, p);
			else if (next == 0 || p->deadline_ms < next)
				next = p->deadline_ms;
		}
	TAILQ_FOREACH_SAFE(p, &b->watchers, link, tmp) {
		if (p->deadline_ms <= now)
			mb_arbiter_expire_parked(b, p);
		else if (next == 0 || p->deadline_ms < next)
			next = p->deadline_ms;
	}
	return next;
}

uint32_t mb_arbiter_abandon_all(mb_broker *b)
{
	uint32_t n = 0;
	mb_parked *p;

	b->stopping = true;
	for (int level = 0; level < MB_LEVELS; level++)
		while ((p = TAILQ_FIRST(&b->waiters[level])) != NULL) {
			b->waits_abandoned++;
			mb_arbiter_finish(b, p, HOST_E_ABANDONED, "the broker is shutting down");
			n++;
		}
	while ((p = TAILQ_FIRST(&b->watchers)) != NULL) {
		mb_arbiter_finish(b, p, S_OK, NULL);
		n++;
	}
	return n;
}

uint32_t mb_arbiter_parked(const mb_broker *b)
{
	uint32_t n = b->nwaiters;
	mb_parked *p;

	TAILQ_FOREACH(p, &b->watchers, link)
		n++;
	return n;
}
