/*
 * credit.h: commit credit on the broker's side: granting it, taking it back, and booking the
 * commits a client made with it (see common/mb_credit.h for the shared word).
 *
 * Invariant, for an honest client: s->credit == the word's value + the bytes of the client's local
 * commits not yet reported. s->credit is charged to the budget, the session and its group like a
 * commit, so the budget is never exceeded; unused credit is taken back before any commit is
 * refused, made to wait or served by reclaiming MEM_RESET pages.
 *
 * Every function here runs with the broker lock held.
 */
#ifndef MB_CREDIT_DAEMON_H
#define MB_CREDIT_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"

/* Credit s has not used yet (the word, clamped to what was granted). */
uint64_t mb_broker_credit_unused(const mb_session *s);

/* Credit s has used for local commits it has not reported yet. */
uint64_t mb_broker_credit_used(const mb_session *s);

/* Bytes allocated in s's section for its memory (the credit page left out). */
uint64_t mb_session_allocated(const mb_session *s);

/* Unused credit of all sessions. O(sessions): for status and load, not for the hot path. */
uint64_t mb_broker_credit_unused_total(mb_broker *b);

/* Tops s's credit up to the configured amount when mb_ledger_credit_grant and s's quotas allow.
 * Returns the bytes granted. */
uint64_t mb_broker_credit_topup(mb_broker *b, mb_session *s);

/* Takes s's unused credit back (returned to the budget). Returns the bytes taken. */
uint64_t mb_broker_credit_revoke(mb_broker *b, mb_session *s);

/* Takes back the credit that stands between s and a commit that did not fit: everyone's for the
 * budget's ceiling, s's own for its limit, its group's for the group's limit. Returns the total. */
uint64_t mb_broker_credit_revoke_for(mb_broker *b, mb_session *s, mb_fit fit);

/* mb_broker_credit_revoke for every session; returns the total taken. */
uint64_t mb_broker_credit_revoke_all(mb_broker *b);

/* Reservation credit granted to one session at most: reservations, and their bytes. */
#define MB_RESERVE_CREDIT_COUNT 256
#define MB_RESERVE_CREDIT_BYTES ((uint64_t)64 << 30)

/*
 * Tops s's reservation credit up to MB_RESERVE_CREDIT_COUNT / _BYTES, cut so that its reservations
 * plus the credit stay within max_count reservations and max_bytes (its quotas). Only while commit
 * credit is on (a client with --commit-credit 0 asks for every reservation).
 */
void mb_broker_reserve_topup(mb_broker *b, mb_session *s, uint64_t max_count, uint64_t max_bytes);

/* Takes s's unused reservation credit back (before a quota refuses it a reservation). */
void mb_broker_reserve_revoke(mb_session *s);

/*
 * Whether a reservation of size bytes that s reports having made by itself is within its
 * reservation credit; mb_broker_reserve_used then books it.
 */
bool mb_broker_reserve_covered(const mb_session *s, uint64_t size);
void mb_broker_reserve_used(mb_session *s, uint64_t size);

/*
 * Books one local commit s reported in a Sync: [address, address+size) at level, made against its
 * credit. The pages become ordinary commits and the credit they used is freed (pages already
 * committed are not charged twice). S_OK, or an error with the reason in why: misaligned, outside
 * one reservation, a bad level, more than the session's credit, or no memory for page state.
 */
HRESULT mb_broker_credit_report(mb_broker *b, mb_session *s, uint64_t address, uint64_t size,
				uint32_t level, char *why, size_t whylen);

#endif
