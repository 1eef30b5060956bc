/*
 * credit.c: local commits against commit credit, so that most commits and decommits of a busy
 * client need no round trip to the broker.
 */
#include "credit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/mman.h>

#include "client_internal.h"
#include "mb_win32.h"
#include "pages.h"

void mb_credit_attach(mb_client *c)
{
	void *p;

	if (c->credit_word != NULL || c->section_fd < 0)
		return;
	p = mmap(NULL, MB_CREDIT_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, c->section_fd,
		 MB_CREDIT_OFFSET);
	if (p == MAP_FAILED)
		return;
	/* Like the section's other mappings: a forked child must not take credit it cannot
	 * report (it has no connection). */
	madvise(p, MB_CREDIT_PAGE, MADV_DONTFORK);
	c->credit_word = p;
}

void mb_credit_detach(mb_client *c)
{
	if (c->credit_word != NULL)
		munmap(c->credit_word, MB_CREDIT_PAGE);
	c->credit_word = NULL;
}

void mb_credit_reset(mb_client *c)
{
	pthread_rwlock_wrlock(&c->map_lock);
	c->npending = 0;
	c->ninflight = 0;
	c->npending_res = 0;
	c->ninflight_res = 0;
	c->npending_free = 0;
	c->ninflight_free = 0;
	pthread_rwlock_unlock(&c->map_lock);
}

static size_t forget_pending(mb_client *c, uintptr_t lo, uintptr_t hi);

/* Index of the reservation at base in list, or -1. */
static int find_reserve(const mb_local_reserve *list, int n, uintptr_t base)
{
	for (int i = 0; i < n; i++)
		if (list[i].address == base)
			return i;
	return -1;
}

static bool overlaps(const mb_local_commit *e, int n, uintptr_t lo, uintptr_t hi)
{
	for (int i = 0; i < n; i++)
		if (e[i].address < hi && lo < e[i].address + e[i].size)
			return true;
	return false;
}

/* Records a local commit; map_lock held for writing. Extends the last range when contiguous, as
 * a heap or a GC commits its way up through a reservation. false when the list is full. */
static bool add_pending(mb_client *c, const mb_region *region, uintptr_t address, size_t size,
			int level)
{
	if (c->npending > 0) {
		mb_local_commit *last = &c->pending[c->npending - 1];
		/* Never across reservations: the broker books a range inside one. */
		if (last->level == level && last->address + last->size == address &&
		    last->address >= region->base) {
			last->size += size;
			return true;
		}
	}
	if (c->npending == MB_WIRE_MAX_SYNC)
		return false;
	c->pending[c->npending++] = (mb_local_commit){address, size, level};
	return true;
}

/* Reports everything pending in one Sync; exhausted when a commit found the credit too small. */
static HRESULT sync(mb_client *c, bool exhausted)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Sync sync = MEMBROKER__V1__SYNC__INIT;
	Membroker__V1__LocalCommit lc[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalCommit *lcp[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalReserve lr[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalReserve *lrp[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalFree lf[MB_WIRE_MAX_SYNC_FREES];
	Membroker__V1__LocalFree *lfp[MB_WIRE_MAX_SYNC_FREES];
	HRESULT hr = S_OK;
	int n, nr, nf;

	pthread_mutex_lock(&c->sync_lock);
	pthread_rwlock_wrlock(&c->map_lock);
	n = c->npending;
	memcpy(c->inflight, c->pending, (size_t)n * sizeof(c->pending[0]));
	c->ninflight = n;
	c->npending = 0;
	nr = c->npending_res;
	memcpy(c->inflight_res, c->pending_res, (size_t)nr * sizeof(c->pending_res[0]));
	c->ninflight_res = nr;
	c->npending_res = 0;
	nf = c->npending_free;
	memcpy(c->inflight_free, c->pending_free, (size_t)nf * sizeof(c->pending_free[0]));
	c->ninflight_free = nf;
	c->npending_free = 0;
	pthread_rwlock_unlock(&c->map_lock);
	if (n > 0 || nr > 0 || nf > 0 || exhausted) {
		for (int i = 0; i < nf; i++) {
			membroker__v1__local_free__init(&lf[i]);
			lf[i].address = c->inflight_free[i].address;
			lf[i].size = c->inflight_free[i].size;
			lf[i].release = c->inflight_free[i].release;
			lfp[i] = &lf[i];
		}
		sync.n_frees = (size_t)nf;
		sync.frees = lfp;
		sync.exhausted = exhausted;
		for (int i = 0; i < nr; i++) {
			membroker__v1__local_reserve__init(&lr[i]);
			lr[i].address = c->inflight_res[i].address;
			lr[i].size = c->inflight_res[i].size;
			lrp[i] = &lr[i];
		}
		sync.n_reserves = (size_t)nr;
		sync.reserves = lrp;
		for (int i = 0; i < n; i++) {
			membroker__v1__local_commit__init(&lc[i]);
			lc[i].address = c->inflight[i].address;
			lc[i].size = c->inflight[i].size;
			lc[i].level = (uint32_t)c->inflight[i].level;
			lcp[i] = &lc[i];
		}
		sync.n_commits = (size_t)n;
		sync.commits = lcp;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_SYNC;
		req.sync = &sync;
		/* Whatever the outcome, these reports are done: on success the broker booked them;
		 * after a lost connection, re-registration books the pages from the map; a refusal
		 * (a broker that disagrees) leaves them to the audit, which tolerates pages up to
		 * the credit they used. */
		hr = mb_client_call_simple(c, &req);
		/* Refused by a stopping broker, or lost with the connection: the books the next
		 * broker restores (or the section re-attached) may lack these reports, so the next
		 * connection hands the section back and registers what the map holds. */
		if (hr == HOST_E_CLRNOTAVAILABLE)
			atomic_store(&c->unsure, true);
		atomic_fetch_add(&c->syncs, 1);
	}
	pthread_rwlock_wrlock(&c->map_lock);
	c->ninflight = 0;
	c->ninflight_res = 0;
	c->ninflight_free = 0;
	pthread_rwlock_unlock(&c->map_lock);
	pthread_mutex_unlock(&c->sync_lock);
	return hr;
}

HRESULT mb_credit_sync(mb_client *c)
{
	return sync(c, false);
}

HRESULT mb_credit_reserve(mb_client *c, uintptr_t want, size_t size, DWORD protect, uintptr_t *out)
{
	size_t span = mb_span_of(size);
	uintptr_t base = 0;
	mb_region *region;

	if (c->credit_word == NULL)
		return MB_CREDIT_REMOTE;
	for (int attempt = 0;; attempt++) {
		pthread_rwlock_rdlock(&c->map_lock);
		bool full = c->npending_res == MB_WIRE_MAX_SYNC;
		bool pending = c->npending_res > 0;
		pthread_rwlock_unlock(&c->map_lock);
		if (!full && mb_reserve_take(c->credit_word, size))
			break;
		/* Reporting what was reserved frees the credit it used; the broker tops it up in
		 * the same round trip. Nothing pending: the Reserve's own round trip tops up. */
		if (attempt > 0 || (!full && !pending))
			return MB_CREDIT_REMOTE;
		mb_credit_sync(c);
	}
	uint64_t session = c->session_id;
	int rv = mb_vaspace_alloc(&c->va, want, span, &base);
	if (rv != 0) {
		mb_reserve_give(c->credit_word, size);
		if (rv == -EEXIST)
			return mb_client_error(MB_E_INVALID_ADDRESS, "%p is already in use",
					       (void *)want);
		return mb_client_error(E_OUTOFMEMORY, "no address space for %zu bytes", span);
	}
	pthread_rwlock_wrlock(&c->map_lock);
	if (c->npending_res == MB_WIRE_MAX_SYNC ||
	    mb_regmap_insert(&c->map, base, size, protect, &region) != 0) {
		pthread_rwlock_unlock(&c->map_lock);
		mb_vaspace_free(&c->va, base, span);
		if (c->session_id == session)
			mb_reserve_give(c->credit_word, size);
		return MB_CREDIT_REMOTE;
	}
	c->pending_res[c->npending_res++] = (mb_local_reserve){base, size};
	pthread_rwlock_unlock(&c->map_lock);
	atomic_fetch_add(&c->local_reserves, 1);
	*out = base;
	return S_OK;
}

HRESULT mb_credit_release(mb_client *c, uintptr_t base)
{
	if (c->credit_word == NULL)
		return MB_CREDIT_REMOTE;
	pthread_rwlock_wrlock(&c->map_lock);
	mb_region *region = mb_regmap_find(&c->map, base);
	int i = region != NULL && region->base == base
		    ? find_reserve(c->pending_res, c->npending_res, base)
		    : -1;
	if (i < 0) {
		bool in_flight = region != NULL &&
				 find_reserve(c->inflight_res, c->ninflight_res, region->base) >= 0;
		pthread_rwlock_unlock(&c->map_lock);
		if (in_flight)
			mb_credit_sync(c); /* waits for the Sync that carries it */
		return MB_CREDIT_REMOTE;
	}
	size_t size = region->size, span = region->span;
	/* Commits in a reservation nobody reported were never reported either: they are all on
	 * the pending list, none in flight, and none crosses the reservation (no split). */
	size_t refund = mb_credit_forget_locked(c, base, base + size);
	if (refund == SIZE_MAX) {
		pthread_rwlock_unlock(&c->map_lock);
		mb_credit_sync(c);
		return MB_CREDIT_REMOTE;
	}
	/* Closed, then punched, and only then is any credit given back (see credit.h). */
	mprotect((void *)base, size, PROT_NONE);
	if (fallocate(c->section_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)base,
		      (off_t)size) != 0) {
		/* The pages stay; the caller's round trip has the broker punch them (the credit
		 * of the commits forgotten above stays used until the session ends). */
		pthread_rwlock_unlock(&c->map_lock);
		mb_credit_sync(c);
		return MB_CREDIT_REMOTE;
	}
	uint64_t session = c->session_id;
	c->pending_res[i] = c->pending_res[--c->npending_res];
	mb_regmap_remove(&c->map, region);
	pthread_rwlock_unlock(&c->map_lock);
	mb_vaspace_free(&c->va, base, span);
	mb_credit_refund(c, refund, session);
	if (c->session_id == session)
		mb_reserve_give(c->credit_word, size);
	atomic_fetch_add(&c->local_releases, 1);
	return S_OK;
}

void mb_credit_report_reservation(mb_client *c, uintptr_t addr)
{
	bool report = false;

	if (c->credit_word == NULL)
		return;
	pthread_rwlock_rdlock(&c->map_lock);
	if (c->npending_res > 0 || c->ninflight_res > 0) {
		mb_region *region = mb_regmap_find(&c->map, addr);
		report = region != NULL &&
			 (find_reserve(c->pending_res, c->npending_res, region->base) >= 0 ||
			  find_reserve(c->inflight_res, c->ninflight_res, region->base) >= 0);
	}
	pthread_rwlock_unlock(&c->map_lock);
	if (report)
		mb_credit_sync(c);
}

HRESULT mb_credit_commit(mb_client *c, uintptr_t addr, size_t size, uint8_t code, int level,
			 uintptr_t *out)
{
	if (c->credit_word == NULL)
		return MB_CREDIT_REMOTE;
	for (int attempt = 0; attempt < 2; attempt++) {
		mb_page_range pr;
		bool full, have = false;

		pthread_rwlock_wrlock(&c->map_lock);
		if (mb_win32_plan_range(&c->map, addr, size, &pr) != S_OK ||
		    mb_region_committed_in(pr.region, pr.first, pr.count) != 0) {
			/* Errors and recommits keep their round-trip semantics. */
			pthread_rwlock_unlock(&c->map_lock);
			return MB_CREDIT_REMOTE;
		}
		size_t len = pr.count * MB_PAGE_SIZE;
		/* Credit granted past the task rule is for higher levels only: a Sync would not
		 * change that, the commit's own round trip decides. */
		if (!mb_credit_level_allows(c->credit_word, level)) {
			pthread_rwlock_unlock(&c->map_lock);
			return MB_CREDIT_REMOTE;
		}
		full = c->npending == MB_WIRE_MAX_SYNC;
		if (!full)
			have = mb_credit_take(c->credit_word, len);
		if (have) {
			HRESULT hr = mb_pages_open(c, &pr, code, level);
			if (hr != S_OK) {
				pthread_rwlock_unlock(&c->map_lock);
				mb_credit_give(c->credit_word, len);
				/* Without page state the broker's path may still succeed. */
				return hr == E_OUTOFMEMORY ? MB_CREDIT_REMOTE : hr;
			}
			add_pending(c, pr.region, pr.start, len,
				    level); /* room was checked above */
			pthread_rwlock_unlock(&c->map_lock);
			atomic_fetch_add(&c->local_commits, 1);
			*out = pr.start;
			return S_OK;
		}
		bool pending = c->npending > 0;
		pthread_rwlock_unlock(&c->map_lock);
		/* Reporting what was committed frees the credit it used, and the broker tops the
		 * credit up in the same round trip when the budget allows. Without pending
		 * reports a Sync would bring nothing: the commit's own round trip tops up. */
		if (attempt > 0 || (!full && !pending))
			break;
		sync(c, !full);
	}
	return MB_CREDIT_REMOTE;
}

/* Index of the pending range that contains [lo, hi), or -1. map_lock held. */
static int containing(const mb_client *c, uintptr_t lo, uintptr_t hi)
{
	for (int i = 0; i < c->npending; i++)
		if (c->pending[i].address <= lo && hi <= c->pending[i].address + c->pending[i].size)
			return i;
	return -1;
}

HRESULT mb_credit_decommit(mb_client *c, uintptr_t addr, size_t size)
{
	mb_page_range pr;

	if (c->credit_word == NULL)
		return MB_CREDIT_REMOTE;
	pthread_rwlock_wrlock(&c->map_lock);
	if (mb_win32_plan_free(&c->map, addr, size, MEM_DECOMMIT, &pr) != S_OK) {
		pthread_rwlock_unlock(&c->map_lock);
		return MB_CREDIT_REMOTE; /* the round-trip path reports the error */
	}
	uintptr_t lo = pr.start, hi = pr.start + pr.count * MB_PAGE_SIZE;
	int i = containing(c, lo, hi);
	if (i >= 0) {
		const mb_local_commit *e = &c->pending[i];
		bool split = e->address < lo && hi < e->address + e->size;
		/* Room for the second half of a split range (mb_credit_forget_locked's rule). */
		if (!split || c->npending < MB_WIRE_MAX_SYNC) {
			/* Closed and punched before the credit goes back (see credit.h). */
			if (mb_pages_close(c, &pr, true) != S_OK) {
				/* The pages stay: report them as committed and let the broker
				 * decommit them. */
				pthread_rwlock_unlock(&c->map_lock);
				mb_credit_sync(c);
				return MB_CREDIT_REMOTE;
			}
			/* Cannot fail: the range lies in one pending range and a split has room,
			 * as checked above. (A Sync in flight may carry an earlier commit of these
			 * pages, followed by a local free of them: it is booked in that order.) */
			forget_pending(c, lo, hi);
			pthread_rwlock_unlock(&c->map_lock);
			mb_credit_give(c->credit_word, hi - lo);
			atomic_fetch_add(&c->local_decommits, 1);
			return S_OK;
		}
	}
	pthread_rwlock_unlock(&c->map_lock);
	return MB_CREDIT_REMOTE; /* mb_credit_forget_locked handles pending pages in the range */
}

void mb_credit_settle(mb_client *c, uintptr_t addr, size_t size)
{
	bool report = false;

	if (c->credit_word == NULL)
		return;
	mb_credit_report_reservation(c, addr);
	pthread_rwlock_rdlock(&c->map_lock);
	if (c->npending > 0 || c->ninflight > 0)
		report = overlaps(c->pending, c->npending, addr, addr + size) ||
			 overlaps(c->inflight, c->ninflight, addr, addr + size);
	pthread_rwlock_unlock(&c->map_lock);
	if (report)
		mb_credit_sync(c);
}

/* Takes the pending local commits in [lo, hi) off the list; returns their bytes, or SIZE_MAX when
 * one must be split and the list is full. map_lock held for writing. */
static size_t forget_pending(mb_client *c, uintptr_t lo, uintptr_t hi)
{
	size_t bytes = 0;

	/* Ranges never overlap, so at most one contains [lo, hi) strictly and must be split. */
	if (c->npending == MB_WIRE_MAX_SYNC)
		for (int i = 0; i < c->npending; i++)
			if (c->pending[i].address < lo &&
			    hi < c->pending[i].address + c->pending[i].size)
				return SIZE_MAX;
	for (int i = 0; i < c->npending;) {
		mb_local_commit *e = &c->pending[i];
		uintptr_t end = e->address + e->size;
		if (end <= lo || hi <= e->address) {
			i++;
			continue;
		}
		uintptr_t cut_lo = e->address > lo ? e->address : lo;
		uintptr_t cut_hi = end < hi ? end : hi;
		bytes += cut_hi - cut_lo;
		if (cut_lo == e->address && cut_hi == end) {
			c->pending[i] = c->pending[--c->npending];
			continue; /* the moved entry is looked at next */
		}
		if (cut_lo == e->address) {
			e->address = cut_hi;
			e->size = end - cut_hi;
		} else if (cut_hi == end) {
			e->size = cut_lo - e->address;
		} else {
			c->pending[c->npending++] =
			    (mb_local_commit){cut_hi, end - cut_hi, e->level};
			e->size = cut_lo - e->address;
		}
		i++;
	}
	return bytes;
}

size_t mb_credit_forget_locked(mb_client *c, uintptr_t lo, uintptr_t hi)
{
	if (c->credit_word == NULL)
		return 0;
	/* Pages in a Sync that has not been answered: the broker may book them before or after
	 * this round trip, so the caller must wait for that answer. */
	if (overlaps(c->inflight, c->ninflight, lo, hi))
		return SIZE_MAX;
	return forget_pending(c, lo, hi);
}

void mb_credit_refund(mb_client *c, size_t bytes, uint64_t session_id)
{
	/* After a reconnection the word belongs to a new session that never granted this. */
	if (bytes > 0 && c->credit_word != NULL && c->session_id == session_id)
		mb_credit_give(c->credit_word, bytes);
}

/* Whether forget_pending(c, lo, hi) can run: a pending range it must split needs room. */
static bool forget_pending_room(const mb_client *c, uintptr_t lo, uintptr_t hi)
{
	if (c->npending < MB_WIRE_MAX_SYNC)
		return true;
	for (int i = 0; i < c->npending; i++)
		if (c->pending[i].address < lo && hi < c->pending[i].address + c->pending[i].size)
			return false;
	return true;
}

/* Bytes of the pending local commits that overlap [lo, hi). map_lock held. */
static size_t pending_bytes_in(const mb_client *c, uintptr_t lo, uintptr_t hi)
{
	size_t bytes = 0;

	for (int i = 0; i < c->npending; i++) {
		uintptr_t a = c->pending[i].address, b = a + c->pending[i].size;
		if (b > lo && a < hi)
			bytes += (b < hi ? b : hi) - (a > lo ? a : lo);
	}
	return bytes;
}

/* Committed bytes of the local frees the broker has not booked yet. map_lock held. */
static size_t unreported_freed(const mb_client *c)
{
	size_t bytes = 0;

	for (int i = 0; i < c->npending_free; i++)
		bytes += c->pending_free[i].bytes;
	for (int i = 0; i < c->ninflight_free; i++)
		bytes += c->inflight_free[i].bytes;
	return bytes;
}

HRESULT mb_credit_free(mb_client *c, uintptr_t addr, size_t size, DWORD free_type)
{
	bool release = free_type == MEM_RELEASE;

	if (c->credit_word == NULL || (free_type != MEM_RELEASE && free_type != MEM_DECOMMIT))
		return MB_CREDIT_REMOTE;
	for (int attempt = 0; attempt < 2; attempt++) {
		uint64_t bound = __atomic_load_n(&c->credit_word->target, __ATOMIC_ACQUIRE);
		mb_page_range pr;

		if (bound == 0)
			return MB_CREDIT_REMOTE; /* no credit: the broker frees at once */
		pthread_rwlock_wrlock(&c->map_lock);
		if (mb_win32_plan_free(&c->map, addr, size, free_type, &pr) != S_OK) {
			pthread_rwlock_unlock(&c->map_lock);
			return MB_CREDIT_REMOTE; /* the round-trip path reports the error */
		}
		mb_region *region = pr.region;
		uintptr_t lo = release ? region->base : pr.start;
		size_t len = release ? region->size : pr.count * MB_PAGE_SIZE;
		size_t first = release ? 0 : pr.first, count = len / MB_PAGE_SIZE;
		/* The broker may discard MEM_RESET pages under pressure at any moment: freed here
		 * and reused before the report, the addresses could hold newer pages by then. */
		if (mb_region_count(region, first, count, MB_PAGE_RESET, MB_PAGE_RESET) > 0) {
			pthread_rwlock_unlock(&c->map_lock);
			return MB_CREDIT_REMOTE;
		}
		/* A reservation the broker has not heard of holds only pending commits: nothing to
		 * report, their credit simply comes back (mb_credit_release does whole ones). */
		bool record = find_reserve(c->pending_res, c->npending_res, region->base) < 0;
		size_t committed = mb_region_committed_in(region, first, count) * MB_PAGE_SIZE;
		size_t pend = pending_bytes_in(c, lo, lo + len);
		/* Pages in a Sync in flight count as reported: that Sync is booked before the one
		 * that will carry this free (one Sync at a time). */
		size_t reported = committed > pend ? committed - pend : 0;
		if (record && reported > bound) {
			/* More than the bound by itself: the broker frees it now. */
			pthread_rwlock_unlock(&c->map_lock);
			return MB_CREDIT_REMOTE;
		}
		bool full = record && (c->npending_free == MB_WIRE_MAX_SYNC_FREES ||
				       unreported_freed(c) + reported > bound);
		if (full || (release && !record)) {
			pthread_rwlock_unlock(&c->map_lock);
			if (attempt > 0 || !full)
				return MB_CREDIT_REMOTE;
			mb_credit_sync(c); /* books the earlier frees: the bound has room again */
			continue;
		}
		/* A split of a pending range needs room on its list. */
		if (!forget_pending_room(c, lo, lo + len)) {
			pthread_rwlock_unlock(&c->map_lock);
			if (attempt > 0)
				return MB_CREDIT_REMOTE;
			mb_credit_sync(c);
			continue;
		}
		/* Closed and punched before anything is recorded or any credit goes back: from here
		 * the broker's charge only ever exceeds what the section holds (see credit.h). */
		mprotect((void *)lo, len, PROT_NONE);
		if (fallocate(c->section_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)lo,
			      (off_t)len) != 0) {
			pthread_rwlock_unlock(&c->map_lock);
			return MB_CREDIT_REMOTE; /* the broker punches them in the round trip */
		}
		size_t refund = forget_pending(c, lo, lo + len);
		if (record)
			c->pending_free[c->npending_free++] =
			    (mb_local_free){lo, release ? 0 : len, release, reported};
		size_t span = region->span;
		if (release)
			mb_regmap_remove(&c->map, region);
		else
			mb_region_decommit(&c->map, region, first, count);
		uint64_t session = c->session_id;
		pthread_rwlock_unlock(&c->map_lock);
		if (release)
			mb_vaspace_free(&c->va, lo, span);
		mb_credit_refund(c, refund, session);
		atomic_fetch_add(release ? &c->local_releases : &c->local_decommits, 1);
		/* No credit left means it was taken back (memory is short) or used up, and credit
		 * only for high levels means the budget is past the task rule: either way the
		 * broker should have these pages back now rather than at some later Sync. */
		if (record && (mb_credit_peek(c->credit_word) == 0 ||
			       !mb_credit_level_allows(c->credit_word, 0)))
			mb_credit_sync(c);
		return S_OK;
	}
	return MB_CREDIT_REMOTE;
}

void mb_credit_report_frees(mb_client *c)
{
	if (c->credit_word == NULL)
		return;
	pthread_rwlock_rdlock(&c->map_lock);
	bool report = c->npending_free > 0 || c->ninflight_free > 0;
	pthread_rwlock_unlock(&c->map_lock);
	if (report)
		mb_credit_sync(c);
}
