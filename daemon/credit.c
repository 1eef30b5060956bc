/*
 * credit.c: commit credit, granted ahead so that most commits need no round trip, and taken back
 * under pressure; and memory in use.
 */
#include "credit.h"

#include <inttypes.h>
#include <stdio.h>

#include "log.h"
#include "mb_credit.h"
#include "memfd.h"

uint64_t mb_credit_unused(const mb_section *s)
{
	uint64_t w;

	if (s->credit_word == NULL)
		return 0;
	w = mb_credit_peek(s->credit_word);
	return w < s->credit ? w : s->credit;
}

uint64_t mb_credit_used(const mb_section *s)
{
	return s->credit - mb_credit_unused(s);
}

uint64_t mb_section_allocated(const mb_section *s)
{
	uint64_t a = mb_memfd_allocated(s->section_fd);

	if (s->credit_word == NULL)
		return a;
	return a > MB_CREDIT_PAGE ? a - MB_CREDIT_PAGE : 0;
}

uint64_t mb_credit_unused_total(const mb_books *k, const mb_registry *r)
{
	uint64_t sum = 0;

	if (k->credit_total == 0)
		return 0;
	for (mb_section *s = mb_registry_first(r); s != NULL; s = mb_registry_next(s))
		sum += mb_credit_unused(s);
	return sum;
}

uint64_t mb_memory_in_use(const mb_books *k, const mb_registry *r)
{
	uint64_t total = k->ledger.committed, unused = mb_credit_unused_total(k, r);

	return unused < total ? total - unused : 0;
}

mb_ledger mb_ledger_in_use(const mb_books *k, const mb_registry *r)
{
	mb_ledger l = k->ledger;

	l.committed = mb_memory_in_use(k, r);
	return l;
}

int mb_pressure_in_use(const mb_books *k, const mb_registry *r, int current, bool waiters)
{
	mb_ledger used = k->ledger;
	int hi = mb_pressure_next(current, &used, waiters);

	if (k->credit_total == 0)
		return hi;
	/* Memory in use lies between the ledger less all credit and the ledger itself, and the
	 * level only falls as use grows: when both ends give the same level, so does the exact
	 * figure, and this runs on every commit without reading every session's word. */
	uint64_t total = k->ledger.committed;
	used.committed = total - (k->credit_total < total ? k->credit_total : total);
	if (mb_pressure_next(current, &used, waiters) == hi)
		return hi;
	used.committed = mb_memory_in_use(k, r);
	return mb_pressure_next(current, &used, waiters);
}

uint64_t mb_credit_target(const mb_books *k, const mb_section *s)
{
	uint64_t base = k->conf->commit_credit;
	unsigned g =
	    s->credit_growth < MB_CREDIT_MAX_GROWTH ? s->credit_growth : MB_CREDIT_MAX_GROWTH;

	return base > (UINT64_MAX >> g) ? base : base << g;
}

/* The word's copy of the target, read by the client as its bound on unreported frees. */
static void publish_target(const mb_books *k, mb_section *s)
{
	if (s->credit_word != NULL)
		__atomic_store_n(&s->credit_word->target, mb_credit_target(k, s), __ATOMIC_RELEASE);
}

void mb_credit_grow(mb_books *k, mb_section *s)
{
	if (s->credit_growth < MB_CREDIT_MAX_GROWTH)
		s->credit_growth++;
	publish_target(k, s);
}

uint64_t mb_credit_topup(mb_books *k, mb_section *s, int level, bool waiters, bool stopping)
{
	uint64_t add;

	if (s->credit_word == NULL || k->conf->commit_credit == 0 || stopping || s->adopting)
		return 0;
	publish_target(k, s);
	uint64_t target = mb_credit_target(k, s);
	int at = 0;
	add = mb_ledger_credit_grant(&k->ledger, s->credit, target, waiters);
	if (add == 0 && level > 0 && k->ledger.committed >= mb_ledger_credit_limit(&k->ledger)) {
		/* Past the task rule: credit for this client's high-level commits only, under
		 * their ceiling. */
		at = level < MB_LEVELS ? level : MB_LEVELS - 1;
		add = mb_ledger_credit_grant_at(&k->ledger, at, s->credit, target, waiters);
	}
	/* Quotas as for a commit at that level: credit must not let a client past its own or its
	 * group's limit, nor into other groups' reserves. */
	if (add == 0 || mb_books_fits(k, s, at, add) != MB_FIT_OK) {
		/* Under the task rule again, whatever is left is for any level. */
		if (k->ledger.committed < mb_ledger_credit_limit(&k->ledger))
			__atomic_store_n(&s->credit_word->credit_level, 0, __ATOMIC_RELEASE);
		return 0;
	}
	/* Marked before the credit appears in the word, so no low-level commit takes it. */
	if (at > 0)
		__atomic_store_n(&s->credit_word->credit_level, (uint64_t)at, __ATOMIC_RELEASE);
	mb_books_charge(k, s, add);
	/* Rewrite the word rather than add to it: a value the client forged above what it was
	 * granted is cut back here. A take or give racing with this is not lost: a take sees the
	 * word briefly empty and asks the broker instead; a give lands on top. */
	uint64_t unused = mb_credit_revoke(s->credit_word);
	if (unused > s->credit)
		unused = s->credit;
	s->credit += add;
	k->credit_total += add;
	mb_credit_give(s->credit_word, unused + add);
	if (at == 0)
		__atomic_store_n(&s->credit_word->credit_level, 0, __ATOMIC_RELEASE);
	return add;
}

uint64_t mb_credit_take_back(mb_books *k, mb_section *s)
{
	uint64_t taken;

	if (s->credit_word == NULL)
		return 0;
	/* Memory is wanted elsewhere: the target starts again from commit_credit. */
	s->credit_growth = 0;
	publish_target(k, s);
	/* Zero the word even when the books say nothing is left: a client that wrote its own
	 * credit keeps none of it. */
	taken = mb_credit_revoke(s->credit_word);
	if (taken > s->credit)
		taken = s->credit;
	if (taken == 0)
		return 0;
	s->credit -= taken;
	k->credit_total -= taken;
	mb_books_refund(k, s, taken);
	k->credit_taken_back_bytes += taken;
	return taken;
}

bool mb_credit_in_way(const mb_books *k, const mb_section *s, mb_fit fit)
{
	if (fit == MB_FIT_OK)
		return false;
	if (fit == MB_FIT_CLIENT_MAX || (fit == MB_FIT_GROUP_MAX && s->group < 0))
		return s->credit > 0;
	return k->credit_total > 0;
}

uint64_t mb_credit_take_back_for(mb_books *k, const mb_registry *r, mb_section *s, mb_fit fit)
{
	uint64_t taken = 0;

	if (fit == MB_FIT_CEILING)
		return mb_credit_take_back_all(k, r);
	/* Others' credit never helps a client past its own or its group's limit. */
	if (fit == MB_FIT_CLIENT_MAX || s->group < 0)
		taken = mb_credit_take_back(k, s);
	else if (fit == MB_FIT_GROUP_MAX)
		for (mb_section *o = mb_registry_first(r); o != NULL; o = mb_registry_next(o))
			if (o->group == s->group)
				taken += mb_credit_take_back(k, o);
	if (taken > 0)
		k->credit_taken_back++;
	return taken;
}

uint64_t mb_credit_take_back_all(mb_books *k, const mb_registry *r)
{
	uint64_t taken = 0;

	if (k->credit_total == 0)
		return 0;
	for (mb_section *s = mb_registry_first(r); s != NULL; s = mb_registry_next(s))
		taken += mb_credit_take_back(k, s);
	if (taken > 0) {
		k->credit_taken_back++;
		mb_log(LOG_DEBUG, "took back %" PRIu64 " KiB of unused commit credit", taken >> 10);
	}
	return taken;
}

void mb_credit_void(mb_books *k, mb_section *s)
{
	mb_credit_take_back(k, s);
	/* What is left was used for local commits that will never be reported to these books. */
	mb_books_refund(k, s, s->credit);
	k->credit_total -= s->credit < k->credit_total ? s->credit : k->credit_total;
	s->credit = 0;
	/* Reservation credit likewise: the new word holds none. */
	s->reserve_count = 0;
	s->reserve_bytes = 0;
}

HRESULT mb_credit_book(mb_books *k, mb_section *s, uint64_t address, uint64_t size, uint32_t level,
		       char *why, size_t whylen)
{
	mb_page_range pr;
	long gained;

	if ((address & (MB_PAGE_SIZE - 1)) != 0 || (size & (MB_PAGE_SIZE - 1)) != 0 || size == 0) {
		snprintf(why, whylen, "local commit at 0x%" PRIx64 ": not whole pages", address);
		return E_INVALIDARG;
	}
	if (level >= MB_LEVELS) {
		snprintf(why, whylen, "local commit at 0x%" PRIx64 ": level %u is not 0, 1 or 2",
			 address, level);
		return E_INVALIDARG;
	}
	if (size > s->credit) {
		snprintf(why, whylen,
			 "local commit at 0x%" PRIx64 " of %" PRIu64
			 " bytes exceeds the session's credit (%" PRIu64 ")",
			 address, size, s->credit);
		return E_INVALIDARG;
	}
	if (mb_win32_plan_range(&s->map, (uintptr_t)address, (size_t)size, &pr) != S_OK) {
		snprintf(why, whylen,
			 "local commit at 0x%" PRIx64
			 " is not inside one reservation of this client",
			 address);
		return MB_E_INVALID_ADDRESS;
	}
	gained = mb_region_commit_at(&s->map, pr.region, pr.first, pr.count, 0, (int)level);
	if (gained < 0) {
		snprintf(why, whylen, "no memory for page state");
		return E_OUTOFMEMORY;
	}
	/* The credit was charged when granted; the pages now carry that charge. Pages the broker
	 * already counted as committed (a round-trip commit overtook this report) are not charged
	 * twice: their share of the credit goes back to the budget. */
	s->credit -= size;
	k->credit_total -= size;
	if (size > (uint64_t)gained * MB_PAGE_SIZE)
		mb_books_refund(k, s, size - (uint64_t)gained * MB_PAGE_SIZE);
	if ((int)level > s->max_level)
		s->max_level = (int)level;
	return S_OK;
}

/* Rewrites one credit word to what is unused (clamped to the books) plus add; returns the unused
 * part. A take racing with this sees the word briefly empty and asks the broker instead. */
static uint64_t rewrite_word(uint64_t *word, uint64_t books, uint64_t add)
{
	uint64_t unused = __atomic_exchange_n(word, 0, __ATOMIC_ACQ_REL);

	if (unused > books)
		unused = books;
	__atomic_fetch_add(word, unused + add, __ATOMIC_ACQ_REL);
	return unused;
}

static uint64_t room(uint64_t limit, uint64_t used, uint64_t cap)
{
	uint64_t left = used < limit ? limit - used : 0;
	return left < cap ? left : cap;
}

void mb_credit_reserve_topup(mb_books *k, mb_section *s, bool stopping)
{
	if (s->credit_word == NULL || k->conf->commit_credit == 0 || stopping || s->adopting)
		return;
	/* Quotas hold with the credit counted as reserved: reservations + credit <= limit. */
	uint64_t want_count =
	    room(mb_books_max_reservations(k), s->map.count, MB_RESERVE_CREDIT_COUNT);
	uint64_t want_bytes =
	    room(mb_books_max_reserved(k), s->map.reserved_bytes, MB_RESERVE_CREDIT_BYTES);
	uint64_t add_count = want_count > s->reserve_count ? want_count - s->reserve_count : 0;
	uint64_t add_bytes = want_bytes > s->reserve_bytes ? want_bytes - s->reserve_bytes : 0;

	rewrite_word(&s->credit_word->reserve_count, s->reserve_count, add_count);
	rewrite_word(&s->credit_word->reserve_bytes, s->reserve_bytes, add_bytes);
	s->reserve_count += add_count;
	s->reserve_bytes += add_bytes;
}

void mb_credit_reserve_take_back(mb_section *s)
{
	if (s->credit_word == NULL)
		return;
	uint64_t count = __atomic_exchange_n(&s->credit_word->reserve_count, 0, __ATOMIC_ACQ_REL);
	uint64_t bytes = __atomic_exchange_n(&s->credit_word->reserve_bytes, 0, __ATOMIC_ACQ_REL);
	s->reserve_count -= count < s->reserve_count ? count : s->reserve_count;
	s->reserve_bytes -= bytes < s->reserve_bytes ? bytes : s->reserve_bytes;
}

bool mb_credit_reserve_covered(const mb_section *s, uint64_t size)
{
	return s->reserve_count >= 1 && s->reserve_bytes >= size;
}

void mb_credit_reserve_used(mb_section *s, uint64_t size)
{
	s->reserve_count -= 1;
	s->reserve_bytes -= size;
}
