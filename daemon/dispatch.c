/*
 * dispatch.c: one request against the broker's state.
 *
 * The client library checked every argument already; the broker checks again, because a client is
 * untrusted and may send anything. Range checks use the same Win32 rules (mb_win32.c) as the
 * client.
 */
#include "dispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "arbiter.h"
#include "audit.h"
#include "books.h"
#include "clock.h"
#include "credit.h"
#include "creds.h"
#include "log.h"
#include "mb_credit.h"
#include "mb_win32.h"
#include "memfd.h"
#include "readopt.h"

typedef struct reply {
	mb_response resp;
	Membroker__V1__HelloReply hello;
	Membroker__V1__MemoryLoadReply load;
	Membroker__V1__SessionStatusReply status;
	Membroker__V1__WatchReply watch;
	Membroker__V1__SyncReply sync;
	Membroker__V1__AdoptDoneReply adopt;
	Membroker__V1__Range ranges[MB_WIRE_MAX_REFUSED];
	Membroker__V1__Range *range_ptrs[MB_WIRE_MAX_REFUSED];
	mb_parked *park; /* where a request that must wait is parked, or NULL */
	char detail[MB_WIRE_MAX_DETAIL + 1];
	uint8_t token[MB_WIRE_TOKEN_LEN];
	uint8_t attach[MB_WIRE_TOKEN_LEN];
} reply;

static HRESULT fail(reply *r, HRESULT hr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static HRESULT fail(reply *r, HRESULT hr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
	r->resp.detail = r->detail;
	return hr;
}

static bool page_aligned(uint64_t v)
{
	return (v & (MB_PAGE_SIZE - 1)) == 0;
}

/*
 * The error for a range this session does not hold: HOST_E_NOT_OWNER when another session of the
 * same process holds the address (two clients in one process share one address space), else
 * `otherwise`.
 */
static HRESULT not_held(mb_broker *b, const mb_section *s, uint64_t address, HRESULT otherwise,
			reply *r)
{
	for (mb_section *o = mb_registry_first(&b->reg); o != NULL; o = mb_registry_next(o)) {
		if (o == s || o->pid != s->pid)
			continue;
		if (mb_regmap_find(&o->map, (uintptr_t)address) != NULL)
			return fail(r, HOST_E_NOT_OWNER,
				    "address 0x%" PRIx64
				    " belongs to another client of this process",
				    address);
	}
	if (otherwise == HOST_E_INVALIDOPERATION)
		return fail(r, otherwise, "address 0x%" PRIx64 " was not allocated by this client",
			    address);
	return fail(r, otherwise,
		    "range at 0x%" PRIx64 " is not inside one reservation of this client", address);
}

/* Resolves [address, address+size) (page aligned, size >= 1) inside one region of s. */
static HRESULT resolve(mb_broker *b, mb_section *s, uint64_t address, uint64_t size,
		       HRESULT outside, mb_page_range *pr, reply *r)
{
	HRESULT hr;

	if (!page_aligned(address) || !page_aligned(size) || size == 0)
		return fail(r, E_INVALIDARG, "address and size must be non-zero page multiples");
	hr = mb_win32_plan_range(&s->map, (uintptr_t)address, (size_t)size, pr);
	if (hr == S_OK)
		return S_OK;
	if (mb_regmap_find(&s->map, (uintptr_t)address) != NULL)
		return fail(r, MB_E_INVALID_ADDRESS,
			    "range at 0x%" PRIx64 " crosses its reservation", address);
	return not_held(b, s, address, outside, r);
}

/* [access]: root always; else the uid, the primary gid or a supplementary group must be listed. */
static bool access_allowed(const mb_broker *b, const mb_conn *c)
{
	const mb_config *conf = &b->conf;
	gid_t *groups;
	bool found = false;
	int n;

	if (c->uid == 0 || (conf->access_uids.n == 0 && conf->access_gids.n == 0))
		return true;
	if (mb_id_list_has(&conf->access_uids, (uint32_t)c->uid) ||
	    mb_id_list_has(&conf->access_gids, (uint32_t)c->gid))
		return true;
	if (conf->access_gids.n == 0)
		return false;
	n = mb_peer_groups(c->pid, c->uid, c->gid, &groups);
	for (int i = 0; i < n && !found; i++)
		found = mb_id_list_has(&conf->access_gids, (uint32_t)groups[i]);
	free(groups);
	return found;
}

static HRESULT do_hello(mb_broker *b, mb_conn *c, const Membroker__V1__Hello *m, reply *r)
{
	mb_section *s = NULL;
	bool resumed = false;
	int rv;

	/* A second Hello on one connection is a protocol error, unless it re-attaches the
	 * connection's own section (a client that gave up on a reply and thinks it lost the
	 * connection). */
	if (c->hello && (c->section == NULL || m->resume_session != c->section->id))
		return fail(r, E_FAIL, "hello sent twice on one connection");
	if (!access_allowed(b, c))
		return fail(r, E_ACCESSDENIED,
			    "uid %u is not allowed to use this broker ([access])",
			    (unsigned)c->uid);
	if (mb_broker_banned(b, c->pid))
		return fail(
		    r, HOST_E_CLRNOTAVAILABLE,
		    "this process was disconnected for writing memory it had not committed; "
		    "it may connect again only after a restart");
	if (m->protocol_version != MB_PROTOCOL_VERSION)
		return fail(r, HOST_E_CLRNOTAVAILABLE,
			    "protocol version %u is not supported; this broker speaks version %d",
			    m->protocol_version, MB_PROTOCOL_VERSION);
	/* A refused re-attach is not an error: the client gets a new, empty section of its own and
	 * knows from `resumed` that its old one is not there (a restarted broker, say). */
	if (m->resume_session != 0)
		resumed = mb_broker_attach(b, c, m->resume_session, m->resume_token.data,
					   m->resume_token.len, &s) == 0;
	if (!resumed && c->hello)
		return fail(r, E_FAIL, "hello sent twice on one connection");
	if (!resumed) {
		/* The throttle of an offender's uid refuses new sections, not a re-attach. */
		uint64_t wait_ms = mb_throttle_wait(&b->throttle, c->uid, mb_now_ms());
		if (wait_ms > 0)
			return fail(
			    r, HOST_E_CLRNOTAVAILABLE,
			    "a process of uid %u was disconnected for writing memory it had "
			    "not committed; this uid's new sessions are refused for %" PRIu64
			    " ms more",
			    (unsigned)c->uid, wait_ms);
		rv = mb_broker_open_section(b, c, m->name, &s);
		if (rv == -EMFILE)
			return fail(r, E_OUTOFMEMORY,
				    "uid %u holds its limit of sections (sessions_per_uid)",
				    (unsigned)c->uid);
		if (rv < 0)
			return fail(r, E_OUTOFMEMORY, "cannot create a section: %s", strerror(-rv));
		memcpy(r->token, s->token, sizeof(r->token));
		r->hello.fd_token.data = r->token;
		r->hello.fd_token.len = sizeof(r->token);
	}
	c->hello = true;
	mb_log(LOG_DEBUG, "section %" PRIu64 " '%s' pid %d uid %u %s", s->id, s->name, (int)s->pid,
	       (unsigned)s->uid, resumed ? "re-attached" : "connected");

	memcpy(r->attach, s->attach_token, sizeof(r->attach));
	r->hello.protocol_version = MB_PROTOCOL_VERSION;
	r->hello.session_id = s->id;
	r->hello.attach_token.data = r->attach;
	r->hello.attach_token.len = sizeof(r->attach);
	r->hello.resumed = resumed;
	r->hello.budget = b->books.ledger.budget;
	r->hello.section_size = b->section_size;
	r->hello.commit_credit = s->credit_word != NULL ? b->conf.commit_credit : 0;
	r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_HELLO;
	r->resp.hello = &r->hello;
	return S_OK;
}

/*
 * The broker's checks of a reservation, the same for a Reserve request and for one the client made
 * by itself and reports in a Sync (local): 64 KiB aligned, a page multiple, inside the usable
 * address range, overlapping no other reservation's 64 KiB span. A Reserve must fit the quotas
 * (the client's own unused reservation credit is taken back first if it stands in the way); a
 * local one must be covered by the reservation credit it was granted, which it then uses up.
 */
static HRESULT add_reservation(mb_broker *b, mb_section *s, uint64_t address, uint64_t size,
			       bool local, reply *r)
{
	uint64_t span;
	int rv;

	if ((address & (MB_GRANULARITY - 1)) != 0 || !page_aligned(size) || size == 0)
		return fail(r, E_INVALIDARG,
			    "reservation must be 64 KiB aligned, size a page multiple");
	if (size > b->section_size || address < MB_ADDRESS_MIN || address > b->section_size - size)
		return fail(r, E_INVALIDARG, "reservation outside the usable address range");
	span = mb_span_of((size_t)size);
	if (address > b->section_size - span)
		return fail(r, E_INVALIDARG, "reservation outside the usable address range");
	if (local && !mb_credit_reserve_covered(s, size))
		return fail(r, E_INVALIDARG,
			    "local reservation at 0x%" PRIx64 " of %" PRIu64
			    " bytes exceeds the session's reservation credit (%" PRIu64
			    " reservations, %" PRIu64 " bytes)",
			    address, size, s->reserve_count, s->reserve_bytes);
	if (!local && !mb_books_reserve_fits(&b->books, s, size)) {
		mb_credit_reserve_take_back(s);
		if (s->map.count >= mb_books_max_reservations(&b->books))
			return fail(r, E_OUTOFMEMORY,
				    "client_max_reservations: this client holds %zu reservations, "
				    "the limit",
				    s->map.count);
		if (!mb_books_reserve_fits(&b->books, s, size))
			return fail(r, E_OUTOFMEMORY,
				    "client_max_reserved: %zu bytes reserved, %" PRIu64
				    " more would pass the limit of %" PRIu64,
				    s->map.reserved_bytes, size, mb_books_max_reserved(&b->books));
	}
	rv = mb_regmap_insert(&s->map, (uintptr_t)address, (size_t)size, 0, NULL);
	if (rv == -EEXIST)
		return fail(r, MB_E_INVALID_ADDRESS, "0x%" PRIx64 " overlaps a reservation",
			    address);
	if (rv != 0)
		return fail(r, E_OUTOFMEMORY, "no memory for the reservation record");
	if (local)
		mb_credit_reserve_used(s, size);
	return S_OK;
}

static HRESULT do_reserve(mb_broker *b, mb_section *s, const Membroker__V1__Reserve *m, reply *r)
{
	HRESULT hr = add_reservation(b, s, m->address, m->size, false, r);

	/* A client that had to ask is out of reservation credit: top it up in the same trip. */
	if (hr == S_OK)
		mb_credit_reserve_topup(&b->books, s, b->stopping);
	return hr;
}

/*
 * Returns the pages of [first, first+count) in region to the pool. With punch the broker punches
 * them out of the section; without (a free the client did by itself, reported in a Sync), it
 * does not: the client punched them already, and by the time of the report the addresses may hold
 * newer pages of the client's. A client that did not punch holds pages no commit covers, which
 * the audit finds and drops.
 */
static void discard_pages(mb_broker *b, mb_section *s, mb_region *region, size_t first,
			  size_t count, bool punch)
{
	size_t dropped = mb_region_decommit(&s->map, region, first, count);
	/* Punch the whole range, not only committed pages: pages a client wrote without
	 * committing them are dropped too. */
	int rv =
	    punch ? mb_memfd_discard(s->section_fd, region->base + (uint64_t)first * MB_PAGE_SIZE,
				     (uint64_t)count * MB_PAGE_SIZE)
		  : 0;
	if (rv < 0)
		mb_log(LOG_WARNING, "session %" PRIu64 ": hole punch failed: %s", s->id,
		       strerror(-rv));
	mb_books_refund(&b->books, s, (uint64_t)dropped * MB_PAGE_SIZE);
	if (dropped > 0)
		mb_arbiter_grant_waiters(b);
}

static HRESULT do_release(mb_broker *b, mb_section *s, const Membroker__V1__Release *m, reply *r)
{
	mb_region *region = mb_regmap_find(&s->map, (uintptr_t)m->address);

	if (region == NULL)
		return not_held(b, s, m->address, HOST_E_INVALIDOPERATION, r);
	if (region->base != m->address)
		return fail(r, MB_E_INVALID_ADDRESS,
			    "0x%" PRIx64 " is not the base of its reservation", m->address);
	discard_pages(b, s, region, 0, region->size / MB_PAGE_SIZE, true);
	mb_regmap_remove(&s->map, region);
	return S_OK;
}

/* Internal marker: the request was parked and is answered later. Never sent. */
#define MB_PARKED_HR ((HRESULT)1)

static HRESULT grant(mb_broker *b, mb_section *s, const mb_page_range *pr, int level, reply *r)
{
	if (mb_books_commit_pages(&b->books, s, pr, level) < 0)
		return fail(r, E_OUTOFMEMORY, "no memory for page state");
	/* Pressure first: turning Low takes credit back, which must not be the top-up below. */
	mb_arbiter_update_pressure(b);
	/* A client that had to ask is out of credit: top it up with the same round trip (for
	 * commits at this level and above, past the task rule). */
	mb_credit_topup(&b->books, s, level, b->nwaiters > 0, b->stopping);
	return S_OK;
}

static HRESULT do_commit(mb_broker *b, mb_section *s, uint64_t request_id,
			 const Membroker__V1__Commit *m, reply *r)
{
	mb_page_range pr;
	HRESULT hr;
	uint64_t bytes;
	int level = (int)m->level;

	if (m->level > 2 || mb_win32_check_level(level) != S_OK)
		return fail(r, E_INVALIDARG, "critical level %u is not 0, 1 or 2", m->level);
	hr = resolve(b, s, m->address, m->size, MB_E_INVALID_ADDRESS, &pr, r);
	if (hr != S_OK)
		return hr;
	bytes = (uint64_t)(pr.count - mb_region_committed_in(pr.region, pr.first, pr.count)) *
		MB_PAGE_SIZE;
	if (m->adopt) {
		/* A claim of memory the client held under a previous broker: the pages may exist
		 * in its section, but this broker's books are the authority. It is checked now
		 * (inside a registered reservation, above; within the quotas) and booked with
		 * every other claim at AdoptDone, through the decision of a commit at its level
		 * (readopt.h). */
		if (!s->adopting)
			return fail(r, E_INVALIDARG,
				    "adopt is only valid while an adopted section re-registers");
		uint64_t cut, end = pr.start + (uint64_t)pr.count * MB_PAGE_SIZE;
		hr = mb_readopt_claim(b, s, &pr, level, &cut, r->detail, sizeof(r->detail));
		if (hr != S_OK) {
			r->resp.detail = r->detail;
			return hr;
		}
		if (cut < end) {
			/* Claimed in part: the reply names the refused rest. */
			membroker__v1__range__init(&r->ranges[0]);
			r->ranges[0].address = cut;
			r->ranges[0].size = end - cut;
			r->range_ptrs[0] = &r->ranges[0];
			r->adopt.n_refused = 1;
			r->adopt.refused = r->range_ptrs;
			r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE;
			r->resp.adopt_done = &r->adopt;
		}
		return S_OK;
	}
	mb_decision d = mb_arbiter_decide_pages(b, s, level, &pr, false, r->park != NULL);
	switch (d.verdict) {
	case MB_VERDICT_GRANT:
		return grant(b, s, &pr, level, r);
	case MB_VERDICT_PARK:
		r->park->kind = MB_PARK_COMMIT;
		r->park->address = pr.start;
		r->park->size = (uint64_t)pr.count * MB_PAGE_SIZE;
		r->park->level = level;
		mb_arbiter_park(b, r->park, s->conn->pipe_id, request_id,
				b->books.ledger.wait_ms[level]);
		mb_arbiter_update_pressure(b);
		return MB_PARKED_HR;
	default:
		break;
	}
	if (d.reason == MB_REASON_STOPPING)
		return fail(r, HOST_E_ABANDONED, "the broker is shutting down");
	b->refusals++;
	mb_log_event(LOG_NOTICE, MB_MSGID_REFUSED, (int)s->pid, (unsigned)s->uid, level,
		     (unsigned long long)bytes, (unsigned)E_OUTOFMEMORY, "commit refused: %s",
		     mb_reason_text(d.reason));
	if (d.reason == MB_REASON_CLIENT_MAX)
		return fail(r, E_OUTOFMEMORY,
			    "client_max: %" PRIu64 " bytes committed, limit %" PRIu64,
			    mb_section_charged(s), b->conf.client_max);
	if (d.reason == MB_REASON_GROUP_MAX)
		return fail(r, E_OUTOFMEMORY, "max of group '%s': %" PRIu64 " of %" PRIu64 " bytes",
			    b->conf.groups[s->group].name, b->books.group_charged[s->group],
			    b->conf.groups[s->group].max);
	mb_arbiter_update_pressure(b);
	return fail(r, E_OUTOFMEMORY,
		    "budget: %" PRIu64 " of %" PRIu64 " bytes committed, level %d may use up to "
		    "%" PRIu64,
		    b->books.ledger.committed, b->books.ledger.budget, level,
		    mb_ledger_ceiling(&b->books.ledger, level));
}

static HRESULT do_decommit(mb_broker *b, mb_section *s, const Membroker__V1__Decommit *m, reply *r)
{
	mb_page_range pr;
	HRESULT hr;

	if (!page_aligned(m->address) || !page_aligned(m->size) || m->size == 0)
		return fail(r, E_INVALIDARG, "address and size must be non-zero page multiples");
	/* The client's own rule (VirtualFree), so both sides agree on every answer. */
	hr = mb_win32_plan_free(&s->map, (uintptr_t)m->address, (size_t)m->size, MEM_DECOMMIT, &pr);
	if (hr == HOST_E_INVALIDOPERATION)
		return not_held(b, s, m->address, HOST_E_INVALIDOPERATION, r);
	if (hr != S_OK)
		return fail(r, hr, "decommit at 0x%" PRIx64 " does not end inside its reservation",
			    m->address);
	discard_pages(b, s, pr.region, pr.first, pr.count, true);
	return S_OK;
}

/*
 * MEM_RESET and MEM_RESET_UNDO over pages of one reservation (mb_win32_plan_reset): committed pages
 * are marked (or unmarked), pages that are only reserved are left alone. Pages the broker
 * discarded after a MEM_RESET still count as committed from the client's view.
 */
static HRESULT do_reset(mb_broker *b, mb_section *s, uint64_t address, uint64_t size, bool undo,
			reply *r)
{
	mb_page_range pr;
	size_t lost = 0, committed = 0;
	HRESULT hr;

	if (!page_aligned(address) || !page_aligned(size) || size == 0)
		return fail(r, E_INVALIDARG, "address and size must be non-zero page multiples");
	hr = mb_win32_plan_reset(&s->map, (uintptr_t)address, (size_t)size, &pr, &committed);
	if (hr != S_OK) {
		if (mb_regmap_find(&s->map, (uintptr_t)address) != NULL)
			return fail(r, hr, "range at 0x%" PRIx64 " crosses its reservation",
				    address);
		return not_held(b, s, address, MB_E_INVALID_ADDRESS, r);
	}
	lost = mb_region_count(pr.region, pr.first, pr.count, MB_PAGE_DISCARDED, MB_PAGE_DISCARDED);
	if (!undo && committed == 0)
		return S_OK; /* only reserved (or already discarded) pages: nothing changes */
	if (!undo) {
		if (mb_region_update(&s->map, pr.region, pr.first, pr.count, MB_PAGE_COMMITTED,
				     MB_PAGE_COMMITTED, 0, MB_PAGE_RESET, -1, NULL) < 0)
			return fail(r, E_OUTOFMEMORY, "no memory for page state");
		mb_arbiter_queue_reset(b, s, &pr);
		return S_OK;
	}
	if (lost > 0) {
		/* The discarded pages come back as fresh zero pages and are charged again when the
		 * budget allows; otherwise they stay discarded (a later write is charged or dropped
		 * by the audit). Either way the undo failed: data was lost. */
		uint64_t bytes = (uint64_t)lost * MB_PAGE_SIZE;
		if (mb_books_fits(&b->books, s, MB_LEVELS - 1, bytes) != MB_FIT_OK)
			return fail(
			    r, MB_E_INVALID_ADDRESS,
			    "MEM_RESET_UNDO: the broker discarded %zu of these pages under memory "
			    "pressure and cannot commit them again now",
			    lost);
		long gained = mb_region_update(
		    &s->map, pr.region, pr.first, pr.count, MB_PAGE_DISCARDED, MB_PAGE_DISCARDED,
		    MB_PAGE_RESET | MB_PAGE_DISCARDED, MB_PAGE_COMMITTED, -1, NULL);
		if (gained < 0)
			return fail(r, E_OUTOFMEMORY, "no memory for page state");
		mb_books_charge(&b->books, s, (uint64_t)gained * MB_PAGE_SIZE);
	}
	/* The pages are in use again: nothing left to reclaim here. */
	mb_region_update(&s->map, pr.region, pr.first, pr.count, 0, 0, MB_PAGE_RESET, 0, -1, NULL);
	if (lost > 0)
		return fail(r, MB_E_INVALID_ADDRESS,
			    "MEM_RESET_UNDO: the broker discarded %zu of these pages under memory "
			    "pressure; they read as zero",
			    lost);
	return S_OK;
}

/*
 * A free the client did by itself on pages or a reservation this broker knew of, checked with the
 * same rules as a Decommit or Release: booked and refunded, never punched (discard_pages).
 */
static HRESULT book_local_free(mb_broker *b, mb_section *s, const Membroker__V1__LocalFree *lf,
			       reply *r)
{
	mb_page_range pr;

	if (lf->release) {
		mb_region *region = mb_regmap_find(&s->map, (uintptr_t)lf->address);
		if (region == NULL || region->base != lf->address || lf->size != 0)
			return fail(r, E_INVALIDARG,
				    "local release at 0x%" PRIx64
				    " does not name a reservation of this client",
				    lf->address);
		discard_pages(b, s, region, 0, region->size / MB_PAGE_SIZE, false);
		mb_regmap_remove(&s->map, region);
		return S_OK;
	}
	if (!page_aligned(lf->address) || !page_aligned(lf->size) || lf->size == 0 ||
	    mb_win32_plan_free(&s->map, (uintptr_t)lf->address, (size_t)lf->size, MEM_DECOMMIT,
			       &pr) != S_OK)
		return fail(r, E_INVALIDARG,
			    "local decommit at 0x%" PRIx64
			    " is not whole pages inside one reservation of this client",
			    lf->address);
	discard_pages(b, s, pr.region, pr.first, pr.count, false);
	return S_OK;
}

/* Local frees, reservations and commits are booked in that order (see the proto); then the
 * credit is topped up, to a higher target if the client ran out. */
static HRESULT do_sync(mb_broker *b, mb_section *s, const Membroker__V1__Sync *m, reply *r)
{
	/* Frees first: whatever the client reserved or committed after a free, at the same
	 * addresses or not, is reported below it. */
	for (size_t i = 0; i < m->n_frees; i++) {
		HRESULT hr = book_local_free(b, s, m->frees[i], r);
		if (hr != S_OK)
			return hr;
	}
	/* Reservations next: the commits reported with them may lie in them. */
	for (size_t i = 0; i < m->n_reserves; i++) {
		HRESULT hr =
		    add_reservation(b, s, m->reserves[i]->address, m->reserves[i]->size, true, r);
		if (hr != S_OK)
			return hr;
	}
	int level = 0; /* the highest reported: credit past the task rule is for it */
	for (size_t i = 0; i < m->n_commits; i++) {
		const Membroker__V1__LocalCommit *lc = m->commits[i];
		if (lc->level < MB_LEVELS && (int)lc->level > level)
			level = (int)lc->level;
		HRESULT hr = mb_credit_book(&b->books, s, lc->address, lc->size, lc->level,
					    r->detail, sizeof(r->detail));
		if (hr != S_OK) {
			/* Entries before this one are booked; the client's books and ours now
			 * differ, which only a broken or hostile client causes. The audit still
			 * bounds what it can use. */
			r->resp.detail = r->detail;
			return hr;
		}
	}
	if (m->exhausted && b->nwaiters == 0 && !b->stopping)
		mb_credit_grow(&b->books, s);
	mb_arbiter_update_pressure(b);
	mb_credit_topup(&b->books, s, level, b->nwaiters > 0, b->stopping);
	mb_credit_reserve_topup(&b->books, s, b->stopping);
	r->sync.credit = mb_credit_unused(s);
	r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_SYNC;
	r->resp.sync = &r->sync;
	return S_OK;
}

static HRESULT do_watch(mb_broker *b, mb_section *s, uint64_t request_id,
			const Membroker__V1__Watch *m, reply *r)
{
	/* A long poll answers after at most this long, so a client notices a dead broker. */
	const uint32_t refresh_ms = 30000;

	if (m->last_level == (uint32_t)b->pressure && r->park != NULL && !b->stopping) {
		r->park->kind = MB_PARK_WATCH;
		r->park->last_level = m->last_level;
		mb_arbiter_park(b, r->park, s->conn->pipe_id, request_id, refresh_ms);
		return MB_PARKED_HR;
	}
	r->watch.level = (uint32_t)b->pressure;
	r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_WATCH;
	r->resp.watch = &r->watch;
	return S_OK;
}

/* What s could commit now at eTaskCritical: the ceiling less others' reserves, capped by quotas,
 * judged on memory in use (unused credit would be taken back for such a commit). */
static uint64_t available_for(const mb_books *in_use, const mb_section *s)
{
	uint64_t lo = 0, hi = mb_ledger_available(&in_use->ledger, 0);

	/* mb_books_fits is monotonic in bytes: binary search the largest page count that fits. */
	hi /= MB_PAGE_SIZE;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;
		if (mb_books_fits(in_use, s, 0, mid * MB_PAGE_SIZE) == MB_FIT_OK)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo * MB_PAGE_SIZE;
}

static HRESULT do_memory_load(mb_broker *b, const mb_section *s, reply *r)
{
	mb_books in_use = b->books;

	in_use.ledger = mb_ledger_in_use(&b->books, &b->reg);
	r->load.memory_load = mb_ledger_load(&in_use.ledger);
	r->load.available_bytes = available_for(&in_use, s);
	r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD;
	r->resp.memory_load = &r->load;
	return S_OK;
}

static HRESULT do_session_status(mb_broker *b, mb_section *s, reply *r)
{
	uint64_t unused = mb_credit_unused(s);

	r->status.budget = b->books.ledger.budget;
	/* Committed figures count memory in use (credit.h). */
	r->status.total_committed = mb_memory_in_use(&b->books, &b->reg);
	r->status.committed = mb_section_charged(s) - unused;
	r->status.credit = unused;
	r->status.total_credit = mb_credit_unused_total(&b->books, &b->reg);
	r->status.reserved = s->map.reserved_bytes;
	r->status.reservations = s->map.count;
	r->status.sessions = b->reg.sections;
	r->status.section_allocated = mb_section_allocated(s);
	r->status.waiters = b->nwaiters;
	r->status.pressure = (uint32_t)b->pressure;
	r->status.reclaimed = b->reclaimed_bytes;
	r->status.offences = s->offences;
	r->status.mapped = s->mapped_bytes;
	r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS;
	r->resp.session_status = &r->status;
	return S_OK;
}

/* Most self-mapped ranges one client may report. */
#define MB_MAX_MAPPED 65536

/* Index of the first range with address >= a. */
static uint32_t mapped_find(const mb_section *s, uint64_t a)
{
	uint32_t lo = 0, hi = s->nmapped;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (s->mapped[mid].address < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static HRESULT do_address_space(mb_broker *b, mb_section *s, const Membroker__V1__AddressSpace *m,
				reply *r)
{
	uint64_t limit = b->conf.client_max_mapped;
	uint32_t i;

	switch (m->op) {
	case 1: /* needs: policy only */
	case 2: /* acquired */
		if (m->size == 0 || m->address > UINT64_MAX - m->size)
			return fail(r, E_INVALIDARG, "empty or wrapping address range");
		if (limit != 0 && (s->mapped_bytes > limit || m->size > limit - s->mapped_bytes)) {
			b->refusals++;
			return fail(r, E_OUTOFMEMORY,
				    "address space: %" PRIu64 " bytes mapped, limit %" PRIu64,
				    s->mapped_bytes, limit);
		}
		if (m->op == 1)
			return S_OK;
		i = mapped_find(s, m->address);
		if (i < s->nmapped && s->mapped[i].address == m->address)
			return fail(r, MB_E_INVALID_ADDRESS, "0x%" PRIx64 " is already reported",
				    m->address);
		if (s->nmapped >= MB_MAX_MAPPED)
			return fail(r, E_OUTOFMEMORY, "too many reported mappings");
		if (s->nmapped == s->mapped_cap) {
			uint32_t cap = s->mapped_cap ? s->mapped_cap * 2 : 16;
			mb_mapped *n = realloc(s->mapped, cap * sizeof(*n));
			if (n == NULL)
				return fail(r, E_OUTOFMEMORY, "no memory for the record");
			s->mapped = n;
			s->mapped_cap = cap;
		}
		memmove(&s->mapped[i + 1], &s->mapped[i], (s->nmapped - i) * sizeof(*s->mapped));
		s->mapped[i].address = m->address;
		s->mapped[i].size = m->size;
		s->nmapped++;
		s->mapped_bytes += m->size;
		return S_OK;
	case 3: /* released */
		i = mapped_find(s, m->address);
		if (i >= s->nmapped || s->mapped[i].address != m->address)
			return fail(r, HOST_E_INVALIDOPERATION, "0x%" PRIx64 " was not reported",
				    m->address);
		s->mapped_bytes -= s->mapped[i].size;
		memmove(&s->mapped[i], &s->mapped[i + 1],
			(s->nmapped - i - 1) * sizeof(*s->mapped));
		s->nmapped--;
		return S_OK;
	default:
		return fail(r, E_INVALIDARG, "address space operation %u is not 1, 2 or 3", m->op);
	}
}

/* The first AdoptDone books the claims; every one lists the next refused ranges. */
static HRESULT do_adopt_done(mb_broker *b, mb_section *s, reply *r)
{
	mb_readopt_range refused[MB_WIRE_MAX_REFUSED];
	bool more = false;
	size_t n;

	if (!s->adopted)
		return fail(r, E_INVALIDARG, "adopt_done without an adopted section");
	if (s->adopting) {
		mb_readopt_book(b, s);
		r->adopt.booked = s->readopt_booked;
		r->adopt.refused_bytes = s->readopt_refused;
	}
	n = mb_readopt_refused(s, refused, MB_WIRE_MAX_REFUSED, &more);
	for (size_t i = 0; i < n; i++) {
		membroker__v1__range__init(&r->ranges[i]);
		r->ranges[i].address = refused[i].address;
		r->ranges[i].size = refused[i].size;
		r->range_ptrs[i] = &r->ranges[i];
	}
	r->adopt.n_refused = n;
	r->adopt.refused = r->range_ptrs;
	r->adopt.more = more;
	r->resp.body_case = MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE;
	r->resp.adopt_done = &r->adopt;
	return S_OK;
}

static HRESULT run(mb_broker *b, mb_conn *c, const mb_request *req, reply *r)
{
	mb_section *s = c->section;

	if (b->frozen)
		/* The books are in the snapshot the next broker restores: nothing may change
		 * them now. The client connects again (re-attaching its section) to that one. */
		return fail(
		    r, HOST_E_CLRNOTAVAILABLE,
		    "the broker is restarting; its sections and books are kept for the next "
		    "one");
	if (req->body_case == MEMBROKER__V1__REQUEST__BODY_HELLO)
		return do_hello(b, c, req->hello, r);
	if (!c->hello)
		/* Typically a client whose connection was re-established underneath it (nng
		 * redials): it has no session here and must connect again. */
		return fail(r, HOST_E_CLRNOTAVAILABLE,
			    "no session on this connection: send hello first");
	if (s == NULL)
		/* Ended under it: its process exited, or it was ended for offences. */
		return fail(r, HOST_E_CLRNOTAVAILABLE, "session ended");
	switch (req->body_case) {
	case MEMBROKER__V1__REQUEST__BODY_RESERVE:
		return do_reserve(b, s, req->reserve, r);
	case MEMBROKER__V1__REQUEST__BODY_RELEASE:
		return do_release(b, s, req->release, r);
	case MEMBROKER__V1__REQUEST__BODY_COMMIT:
		return do_commit(b, s, req->request_id, req->commit, r);
	case MEMBROKER__V1__REQUEST__BODY_DECOMMIT:
		return do_decommit(b, s, req->decommit, r);
	case MEMBROKER__V1__REQUEST__BODY_RESET:
		return do_reset(b, s, req->reset->address, req->reset->size, false, r);
	case MEMBROKER__V1__REQUEST__BODY_RESET_UNDO:
		return do_reset(b, s, req->reset_undo->address, req->reset_undo->size, true, r);
	case MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD:
		return do_memory_load(b, s, r);
	case MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS:
		return do_session_status(b, s, r);
	case MEMBROKER__V1__REQUEST__BODY_WATCH:
		return do_watch(b, s, req->request_id, req->watch, r);
	case MEMBROKER__V1__REQUEST__BODY_ADDRESS_SPACE:
		return do_address_space(b, s, req->address_space, r);
	case MEMBROKER__V1__REQUEST__BODY_SYNC:
		return do_sync(b, s, req->sync, r);
	case MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE:
		return do_adopt_done(b, s, r);
	case MEMBROKER__V1__REQUEST__BODY_GOODBYE:
		mb_broker_end_section(b, s, "the client said goodbye");
		return S_OK;
	default:
		return fail(r, E_FAIL, "unknown operation");
	}
}

static void reply_init(reply *r, uint64_t request_id, mb_parked *park)
{
	memset(r, 0, sizeof(*r));
	membroker__v1__response__init(&r->resp);
	membroker__v1__hello_reply__init(&r->hello);
	membroker__v1__memory_load_reply__init(&r->load);
	membroker__v1__session_status_reply__init(&r->status);
	membroker__v1__watch_reply__init(&r->watch);
	membroker__v1__sync_reply__init(&r->sync);
	membroker__v1__adopt_done_reply__init(&r->adopt);
	r->resp.request_id = request_id;
	r->park = park;
}

/*
 * Returning written pages to the kernel takes time (about 1 ms per 8 MiB here), and done under
 * the lock it queues every other client's call behind one client's decommit. So a large decommit,
 * release or Goodbye (which ends the section) is punched first, on a duplicate of the section's
 * descriptor with the lock released, and then booked under the lock as usual (whose punch now finds
 * a hole). Meanwhile the pages are still charged: the books only ever overstate what is in use.
 * Only the requester's own section is touched, and a request the books would refuse is not punched
 * (the plan is checked first), so nothing here can cost another client a byte; a client racing its
 * own decommit with a commit of the same pages gets one of the two orders, as from Windows.
 */
static void prepunch(mb_broker *b, uint32_t pipe_id, const mb_request *req)
{
	uint64_t start = 0, len = 0;
	int fd = -1;

	pthread_mutex_lock(&b->lock);
	mb_conn *c = mb_registry_conn(&b->reg, pipe_id);
	mb_section *s = c != NULL && c->hello ? c->section : NULL;
	if (s != NULL && req->body_case == MEMBROKER__V1__REQUEST__BODY_DECOMMIT) {
		const Membroker__V1__Decommit *m = req->decommit;
		mb_page_range pr;
		if (page_aligned(m->address) && page_aligned(m->size) && m->size != 0 &&
		    mb_win32_plan_free(&s->map, (uintptr_t)m->address, (size_t)m->size,
				       MEM_DECOMMIT, &pr) == S_OK) {
			start = pr.start;
			len = (uint64_t)pr.count * MB_PAGE_SIZE;
		}
	} else if (s != NULL && req->body_case == MEMBROKER__V1__REQUEST__BODY_GOODBYE) {
		/* The client is done with all of it; the credit page goes when the section ends. */
		if (mb_section_allocated(s) >= MB_PUNCH_FIRST_MIN) {
			start = MB_CREDIT_PAGE;
			len = MB_ADDRESS_LIMIT - MB_CREDIT_PAGE;
		}
	} else if (s != NULL) {
		mb_region *region = mb_regmap_find(&s->map, (uintptr_t)req->release->address);
		if (region != NULL && region->base == req->release->address) {
			start = region->base;
			len = region->size;
		}
	}
	if (len >= MB_PUNCH_FIRST_MIN)
		fd = fcntl(s->section_fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&b->lock);
	if (fd < 0)
		return; /* small, refused, or no descriptor to spare: punched under the lock */
	mb_memfd_discard(fd, start, len);
	close(fd);
}

int mb_dispatch_park(mb_broker *b, uint32_t pipe_id, const void *data, size_t len,
		     nng_msg **reply_msg, mb_parked *park)
{
	mb_request *req = mb_wire_unpack_request(data, len);
	reply r;
	mb_conn *c;
	HRESULT hr;
	int op;

	if (req == NULL) {
		pthread_mutex_lock(&b->lock);
		b->protocol_errors++;
		pthread_mutex_unlock(&b->lock);
		return MB_DISPATCH_DROP;
	}
	reply_init(&r, req->request_id, park);
	op = req->body_case;
	if (op == MEMBROKER__V1__REQUEST__BODY_DECOMMIT ||
	    op == MEMBROKER__V1__REQUEST__BODY_RELEASE ||
	    op == MEMBROKER__V1__REQUEST__BODY_GOODBYE)
		prepunch(b, pipe_id, req);

	pthread_mutex_lock(&b->lock);
	b->requests++;
	c = mb_registry_conn(&b->reg, pipe_id);
	if (c == NULL && op == MEMBROKER__V1__REQUEST__BODY_HELLO) {
		/* nng may deliver a new connection's first message before its ADD_POST event
		 * has run: the caller creates the session and asks again. */
		pthread_mutex_unlock(&b->lock);
		mb_wire_free_request(req);
		return MB_DISPATCH_NO_SESSION;
	}
	if (c == NULL)
		/* The connection ended while this request was queued: nothing may be granted
		 * to it. */
		hr = fail(&r, HOST_E_CLRNOTAVAILABLE, "session ended");
	else
		hr = run(b, c, req, &r);
	pthread_mutex_unlock(&b->lock);
	mb_wire_free_request(req);
	if (hr == MB_PARKED_HR)
		return MB_DISPATCH_PARKED;

	r.resp.hresult = (uint32_t)hr;
	if (hr != S_OK)
		mb_log(LOG_DEBUG, "pipe %u %s: %s (%s)", pipe_id, mb_wire_op_name(op),
		       mb_hresult_name(hr), r.detail);
	return mb_wire_pack_response(&r.resp, reply_msg) == 0 ? MB_DISPATCH_REPLY
							      : MB_DISPATCH_DROP;
}

int mb_dispatch(mb_broker *b, uint32_t pipe_id, const void *data, size_t len, nng_msg **reply_msg)
{
	return mb_dispatch_park(b, pipe_id, data, len, reply_msg, NULL);
}

int mb_dispatch_finish(mb_broker *b, mb_parked *p, bool expired, nng_msg **reply_msg)
{
	reply r;

	reply_init(&r, p->request_id, NULL);
	pthread_mutex_lock(&b->lock);
	if (p->state == MB_PARK_WAITING) {
		uint64_t now = mb_now_ms();
		if (!expired && now < p->deadline_ms) {
			p->arm(p, (uint32_t)(p->deadline_ms - now));
			pthread_mutex_unlock(&b->lock);
			return MB_DISPATCH_PARKED;
		}
		mb_arbiter_expire_parked(b, p);
	}
	if (p->kind == MB_PARK_WATCH) {
		r.watch.level = (uint32_t)b->pressure;
		r.resp.body_case = MEMBROKER__V1__RESPONSE__BODY_WATCH;
		r.resp.watch = &r.watch;
	}
	pthread_mutex_unlock(&b->lock);
	p->state = MB_PARK_IDLE;
	r.resp.hresult = (uint32_t)p->result;
	if (p->detail[0] != '\0') {
		snprintf(r.detail, sizeof(r.detail), "%s", p->detail);
		r.resp.detail = r.detail;
	}
	return mb_wire_pack_response(&r.resp, reply_msg) == 0 ? MB_DISPATCH_REPLY
							      : MB_DISPATCH_DROP;
}
