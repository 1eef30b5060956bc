/*
 * credit.h: commit credit on the broker's side: granting it, taking it back, booking the commits
 * a client made with it (see common/mb_credit.h for the shared word), and the one view of memory
 * in use that every figure shown or acted on is computed from.
 *
 * Invariant, for an honest client: s->credit == the word's value + the bytes of the client's local
 * commits not yet reported. s->credit is charged through the books like a commit, so the budget is
 * never exceeded; unused credit is taken back before any commit is refused, made to wait or served
 * by reclaiming MEM_RESET pages (decide.h).
 *
 * Memory in use = the ledger's total less the unused credit of every session: credit a client
 * used for local commits it has not reported yet is in use; credit it holds unused is not. Status,
 * metrics, GetMemoryLoad, pressure and the systemd STATUS= line all read it from here.
 *
 * Beneath the arbiter, above the books. Lock contract: every function runs with the broker lock
 * held; the only memory shared with a client is the credit word, read and written atomically.
 */
#ifndef MB_CREDIT_DAEMON_H
#define MB_CREDIT_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "books.h"
#include "mb_hresult.h"
#include "registry.h"

/* Credit s has not used yet (the word, clamped to what was granted). */
uint64_t mb_credit_unused(const mb_section *s);

/* Credit s has used for local commits it has not reported yet. */
uint64_t mb_credit_used(const mb_section *s);

/* Bytes allocated in s's section for its memory (the credit page left out). */
uint64_t mb_section_allocated(const mb_section *s);

/* Unused credit of all sessions. O(sessions) while any credit is out, else O(1). */
uint64_t mb_credit_unused_total(const mb_books *k, const mb_registry *r);

/* Memory in use, all sessions (see above). */
uint64_t mb_memory_in_use(const mb_books *k, const mb_registry *r);

/* The ledger as memory in use sees it (committed = mb_memory_in_use): for the load percentage
 * and what a level may still commit. */
mb_ledger mb_ledger_in_use(const mb_books *k, const mb_registry *r);

/* The next pressure level (mb_pressure_next) of memory in use. Cheap on the hot path: it reads
 * every session's word only when the bounds [total - all credit, total] disagree on the level. */
int mb_pressure_in_use(const mb_books *k, const mb_registry *r, int current, bool waiters);

/* A session's credit target grows to at most commit_credit << MB_CREDIT_MAX_GROWTH (16x). */
#define MB_CREDIT_MAX_GROWTH 4

/* s's credit target: what a top-up fills its credit to. commit_credit, doubled at each Sync
 * in which the client says its credit ran out (up to 16x), and back to commit_credit whenever
 * its credit is taken back; 0 when credit is off. */
uint64_t mb_credit_target(const mb_books *k, const mb_section *s);

/* The client ran out of credit: doubles s's target (up to the bound) and publishes it. */
void mb_credit_grow(mb_books *k, mb_section *s);

/* Tops s's credit up to its target when mb_ledger_credit_grant and s's quotas allow, unless
 * anything waits for memory or the broker stops, and publishes the target in the word. Past the
 * task rule (80 % of the budget), a client that just committed at level 1 or 2 is granted credit
 * under that level's ceiling instead, marked in the word (credit_level) as only for commits at
 * that level and above. Returns the bytes granted. */
uint64_t mb_credit_topup(mb_books *k, mb_section *s, int level, bool waiters, bool stopping);

/* Takes s's unused credit back (refunded to the budget). Returns the bytes taken. */
uint64_t mb_credit_take_back(mb_books *k, mb_section *s);

/* Whether unused credit exists that mb_credit_take_back_for could free for a commit of s that
 * did not fit for reason fit. */
bool mb_credit_in_way(const mb_books *k, const mb_section *s, mb_fit fit);

/* Takes back the credit that stands between s and a commit that did not fit: everyone's for the
 * budget's ceiling, s's own for its limit, its group's for the group's limit. Returns the total. */
uint64_t mb_credit_take_back_for(mb_books *k, const mb_registry *r, mb_section *s, mb_fit fit);

/* mb_credit_take_back for every session; returns the total taken. */
uint64_t mb_credit_take_back_all(mb_books *k, const mb_registry *r);

/* All of s's credit, used or not, commit and reservation credit alike, is void (its section is
 * being replaced): refunded, and the word emptied. */
void mb_credit_void(mb_books *k, mb_section *s);

/* Reservation credit granted to one session at most: reservations, and their bytes. */
#define MB_RESERVE_CREDIT_COUNT 256
#define MB_RESERVE_CREDIT_BYTES ((uint64_t)64 << 30)

/*
 * Tops s's reservation credit up to MB_RESERVE_CREDIT_COUNT / _BYTES, cut so that its reservations
 * plus the credit stay within its reservation quotas (books.h). Only while commit credit is on (a
 * client with --commit-credit 0 asks for every reservation) and the broker is not stopping.
 * Reservation credit costs no budget: it is address space, not memory.
 */
void mb_credit_reserve_topup(mb_books *k, mb_section *s, bool stopping);

/* Takes s's unused reservation credit back (before a quota refuses it a reservation). */
void mb_credit_reserve_take_back(mb_section *s);

/*
 * Whether a reservation of size bytes that s reports having made by itself is within its
 * reservation credit; mb_credit_reserve_used then books it.
 */
bool mb_credit_reserve_covered(const mb_section *s, uint64_t size);
void mb_credit_reserve_used(mb_section *s, uint64_t size);

/*
 * Books one local commit s reported in a Sync: [address, address+size) at level, made against its
 * credit. The pages become ordinary commits and the credit they used is freed (pages already
 * committed are not charged twice). S_OK, or an error with the reason in why: misaligned, outside
 * one reservation, a bad level, more than the session's credit, or no memory for page state.
 */
HRESULT mb_credit_book(mb_books *k, mb_section *s, uint64_t address, uint64_t size, uint32_t level,
		       char *why, size_t whylen);

#endif
