/*
 * books.h: the broker's books: the ledger (budget, ceilings, total charged), what each group has
 * charged, and the quotas (client max, group max, other groups' reserves). Every byte charged to
 * or refunded from the budget goes through mb_books_charge / mb_books_refund, so the invariant
 *
 *     ledger.committed == sum over sessions of mb_section_charged() <= budget
 *
 * has one place to hold. "Charged" covers commits and commit credit (credit.h), which is charged
 * like a commit when granted.
 *
 * Address space has quotas too (reservations and their bytes), checked here and nowhere else.
 *
 * Beneath the arbiter and the request path; depends only on the ledger (pure policy), the
 * configuration and the session record. Lock contract: every function runs with the broker lock
 * held (the books are part of the broker's state); none takes a lock or makes a system call.
 */
#ifndef MB_BOOKS_H
#define MB_BOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "ledger.h"
#include "mb_win32.h"
#include "section.h"

typedef struct mb_books {
	mb_ledger ledger;
	const mb_config *conf;			/* groups and limits in force (the broker's) */
	uint64_t group_charged[MB_MAX_GROUPS];	/* bytes, by conf->groups index */
	uint32_t group_sessions[MB_MAX_GROUPS]; /* sessions, by conf->groups index */
	uint64_t credit_total;			/* commit credit of all sessions (credit.c) */
	uint64_t credit_taken_back;		/* times unused credit was taken back */
	uint64_t credit_taken_back_bytes;	/* ... and how much */
	/* Breaches of the invariant above: counted (and shown as a metric and in the journal by
	 * the audit), or fatal where abort_on_violation is set. */
	uint64_t violations;
	const char *violation_where; /* the latest one's path (a string literal) */
	bool abort_on_violation;
} mb_books;

/*
 * Records a breach of the invariant found at where (a string literal naming the path). Counts it;
 * with abort_on_violation set (the sanitizer build of the daemon, and any daemon started with
 * MEMBROKER_ABORT_ON_INVARIANT in its environment) prints where and aborts, so that a test
 * stops at the path that broke the books instead of at its consequence.
 */
void mb_books_violation(mb_books *k, const char *where, uint64_t got, uint64_t want);

/* Empty books over a budget, with conf's groups and limits (conf must outlive the books). */
void mb_books_init(mb_books *k, uint64_t budget, const mb_config *conf);

/* Quota-aware fit of bytes more for s at level: its own limit, its group's limit, the reserves of
 * other groups, then the level's ceiling. */
mb_fit mb_books_fits(const mb_books *k, const mb_section *s, int level, uint64_t bytes);

/*
 * How many bytes more s, re-registering a handed-back section (readopt.h), may claim on top of
 * the claimed bytes it claimed already: everything it holds and claims stays within its own limit,
 * its group's limit and the budget. The level's ceiling and the others' use decide later, when
 * the claims are booked; this bounds what the broker keeps for claims like its commits.
 */
uint64_t mb_books_claim_room(const mb_books *k, const mb_section *s, uint64_t claimed);

/* Reservations one session may hold by default: enough for 100,000-reservation runtimes, bounded
 * so that one client cannot grow the broker's bookkeeping without limit. */
#define MB_MAX_RESERVATIONS 1000000
/* Address space one session may reserve by default: the broker keeps a pointer per 16 MiB
 * reserved (8 MiB for 16 TiB), so this bounds its bookkeeping per client. A .NET GC reserves
 * 256 GiB. */
#define MB_MAX_RESERVED ((uint64_t)16 << 40)

/* The reservation quotas in force: client_max_reservations and client_max_reserved, or their
 * defaults. */
uint64_t mb_books_max_reservations(const mb_books *k);
uint64_t mb_books_max_reserved(const mb_books *k);

/* Whether one more reservation of size bytes keeps s within its reservation quotas, its
 * reservation credit (credit.h) counted as reserved. */
bool mb_books_reserve_fits(const mb_books *k, const mb_section *s, uint64_t size);

/* Books bytes to (charge) or from (refund) a session's group and the ledger together. The caller
 * changes what the session holds (its pages or its credit) in the same step. */
void mb_books_charge(mb_books *k, mb_section *s, uint64_t bytes);
void mb_books_refund(mb_books *k, mb_section *s, uint64_t bytes);

/* Commits pr's pages for s at level (the level each newly committed page keeps in the region map)
 * and charges what was not committed yet. Returns the pages newly committed, or -1 (nothing
 * changed) without memory for page state. */
long mb_books_commit_pages(mb_books *k, mb_section *s, const mb_page_range *pr, int level);

/* Puts s in its group per k->conf and books its charge there (at Hello, and after a reload). */
void mb_books_join_group(mb_books *k, mb_section *s);

/* s enters the books whole (a section restored after a broker restart): everything it holds
 * (commits, credit, what it holds without books) is charged, its credit joins the credit total and
 * it joins its group. The inverse of mb_books_leave. */
void mb_books_enter(mb_books *k, mb_section *s);

/* s leaves the books: everything it has charged (commits and credit) is refunded, its credit
 * leaves the credit total and its group loses a session. */
void mb_books_leave(mb_books *k, mb_section *s);

/* Forgets every group's figures (before the sessions join their groups again on a reload). */
void mb_books_clear_groups(mb_books *k);

#endif
