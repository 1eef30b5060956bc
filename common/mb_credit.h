/*
 * mb_credit.h: the commit credit word, shared by the broker and one client through the first page
 * of the client's section.
 *
 * The broker may grant a session commit credit: bytes it has already charged to the budget on the
 * session's behalf. The client then commits pages of its reservations by itself (mprotect, no round
 * trip) while the word allows, and reports those commits later in a Sync, which turns them into
 * ordinary commits. Under memory pressure the broker takes whatever is unused back in one atomic
 * exchange, without asking the client.
 *
 * The word lives at file offset 0 of the section. No reservation can cover that page (addresses
 * start at MB_ADDRESS_MIN), so it never aliases client memory; both sides map it MAP_SHARED.
 *
 * Reservation credit works the same way for address space: the broker counts it against the
 * client's reservation quotas when granted, and the client reserves by itself (reporting the
 * reservation in a later Sync, where the broker checks it with the Win32 rules) while both the
 * count and the bytes allow.
 *
 * Frees of pages the broker already booked (a decommit of reported commits, a release of a
 * reported reservation) are done locally as well: the client closes the pages, punches them out
 * of its section, and reports the free in its next Sync, where the broker books it and refunds
 * the pages (the top-up that follows may grant them again as credit). The bound: until that Sync
 * the broker charges the client for pages it no longer holds, and counts released reservations
 * against its quotas, for at most `target` bytes of committed pages and MB_WIRE_MAX_SYNC_FREES
 * frees per client; a free larger than that, or one made while the client holds no commit
 * credit (taken back because memory is short) or only credit for high levels (credit_level, the
 * budget past 80 %), is reported at once. The books are then never
 * too low, only too high by at most that much. A forged free gains nothing: the broker checks
 * it with the Win32 rules, does not punch (the client did, and the addresses may hold newer
 * pages by the time of the report), and the audit finds any page it still holds that no commit
 * covers.
 *
 * Trust: the client can write the word. The broker therefore never believes it beyond what it
 * granted (every read is clamped to the session's outstanding credit), and the audit still checks
 * the section's real size against the session's charge, so a client that raises its own credit
 * gains at most what it can write before the next audit, as with any other uncommitted write.
 */
#ifndef MB_CREDIT_H
#define MB_CREDIT_H

#include <stdbool.h>
#include <stdint.h>

/* File offset and length of the credit page in every section. */
#define MB_CREDIT_OFFSET 0
#define MB_CREDIT_PAGE	 4096

/* The page's layout; the rest of the page is reserved and zero. */
typedef struct mb_credit_word {
	uint64_t credit; /* bytes the client may still commit without a round trip */
	/* Reservation credit: address space the client may still reserve without a round trip,
	 * as a number of reservations and their bytes (both bounded by its quotas). */
	uint64_t reserve_count;
	uint64_t reserve_bytes;
	/* Written by the broker only: the session's commit credit target (what a top-up fills the
	 * credit to; it grows while the client keeps running out). Also the client's bound on the
	 * committed bytes of frees it made locally and has not reported (see below). */
	uint64_t target;
	/* Written by the broker only: the lowest critical level whose commits may take from
	 * `credit`. 0 while the credit was granted under the task rule (the total under 80 % of
	 * the budget); 1 or 2 when it was granted only under the ceiling of eAppDomainCritical or
	 * eProcessCritical, because the task rule no longer allowed any: an honest client then
	 * takes it only for commits at that level or above, and asks the broker for the others. */
	uint64_t credit_level;
} mb_credit_word;

/* Client: takes bytes of credit if that much is left. Lock-free; safe against the broker. */
static inline bool mb_credit_take(mb_credit_word *w, uint64_t bytes)
{
	uint64_t have = __atomic_load_n(&w->credit, __ATOMIC_ACQUIRE);

	do {
		if (have < bytes)
			return false;
	} while (!__atomic_compare_exchange_n(&w->credit, &have, have - bytes, true,
					      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
	return true;
}

/* Both sides: adds bytes (a local decommit gives its credit back; the broker grants more). */
static inline void mb_credit_give(mb_credit_word *w, uint64_t bytes)
{
	__atomic_fetch_add(&w->credit, bytes, __ATOMIC_ACQ_REL);
}

/* Broker: takes all unused credit back; returns what was there (unclamped: the caller clamps). */
static inline uint64_t mb_credit_revoke(mb_credit_word *w)
{
	return __atomic_exchange_n(&w->credit, 0, __ATOMIC_ACQ_REL);
}

/* Takes one word's bytes if that much is left (lock-free, like mb_credit_take). */
static inline bool mb_credit_take_from(uint64_t *word, uint64_t bytes)
{
	uint64_t have = __atomic_load_n(word, __ATOMIC_ACQUIRE);

	do {
		if (have < bytes)
			return false;
	} while (!__atomic_compare_exchange_n(word, &have, have - bytes, true, __ATOMIC_ACQ_REL,
					      __ATOMIC_ACQUIRE));
	return true;
}

/* Client: takes one reservation of bytes from the reservation credit, if both parts allow. */
static inline bool mb_reserve_take(mb_credit_word *w, uint64_t bytes)
{
	if (!mb_credit_take_from(&w->reserve_count, 1))
		return false;
	if (mb_credit_take_from(&w->reserve_bytes, bytes))
		return true;
	__atomic_fetch_add(&w->reserve_count, 1, __ATOMIC_ACQ_REL);
	return false;
}

/* Client: gives one reservation of bytes back (a local release of an unreported one). */
static inline void mb_reserve_give(mb_credit_word *w, uint64_t bytes)
{
	__atomic_fetch_add(&w->reserve_bytes, bytes, __ATOMIC_ACQ_REL);
	__atomic_fetch_add(&w->reserve_count, 1, __ATOMIC_ACQ_REL);
}

/* Client: whether a commit at level may take from the credit. */
static inline bool mb_credit_level_allows(const mb_credit_word *w, int level)
{
	return (uint64_t)level >= __atomic_load_n(&w->credit_level, __ATOMIC_ACQUIRE);
}

/* Either side: the unused credit now (unclamped). */
static inline uint64_t mb_credit_peek(const mb_credit_word *w)
{
	return __atomic_load_n(&w->credit, __ATOMIC_ACQUIRE);
}

#endif
