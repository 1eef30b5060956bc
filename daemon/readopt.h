/*
 * readopt.h: re-adoption without a store: the books of a section its client handed back to a
 * broker that has none for it (a broker started by hand, a lost or full descriptor store, or a
 * client that cannot trust the books the broker kept).
 *
 * The client hands its memfd over (mb_broker_adopt_section), registers its reservations again
 * (through the reservation quotas, as any Reserve) and then claims each run of pages it holds
 * committed, at the level it committed them at (Commit.adopt). A claim is checked at once: one not
 * inside one reservation the client registered is refused (nothing claimed); the part of a claim
 * past what the client may ever hold (everything it holds and claims within its own limit,
 * client_max, its group's limit and the budget) is refused in claim order, its pages punched, and
 * the reply names it. What the broker keeps for claims is therefore bounded like its commits. The
 * library claims the runs its section holds data in first, then the others, so that this cut
 * falls on holes where it can. An accepted claim marks its pages MB_PAGE_CLAIMED with their level
 * in the section's region map (mb_regmap.h): not committed, not charged.
 *
 * AdoptDone (or the deadline, MB_ADOPT_DEADLINE_MS after the hand-over) books the claims:
 *
 *   1. the pages the section really holds (data extents, SEEK_DATA / SEEK_HOLE on the memfd, holes
 *      shorter than MB_EXTENT_GAP inside data counted with it; mb_extent.h), highest level first;
 *   2. then the claimed pages that are holes (nothing of the client's is lost by refusing them),
 *      highest level first.
 *
 * Each run of claimed pages of one level and one kind goes through the decision a commit at that
 * level goes through (mb_arbiter_decide_pages: unused credit taken back, MEM_RESET pages
 * reclaimed, the client's and its group's limits, the other groups' reserves, the level's
 * ceiling; never parked). What does not fit is cut to the largest prefix that does; the rest is
 * refused: punched out of the section and marked MB_PAGE_REFUSED until the client is told. Nothing
 * is ever booked over the budget, so total == sum of sections <= budget holds throughout. Then the
 * section is audited once, forgiving (audit.h): pages no booked commit covers are discarded.
 *
 * The AdoptDone reply lists the refused ranges (MB_WIRE_MAX_REFUSED at a time; the client asks
 * again while there are more); the client marks them decommitted in its map and closes them. A
 * client that never asks has its refused marks cleared MB_ADOPT_DEADLINE_MS after the booking.
 *
 * Lock contract: every function runs with the broker lock held and takes none. The system calls
 * made under it are lseek (SEEK_DATA / SEEK_HOLE, at most MB_READOPT_MAX_SEEKS per booking) and
 * the punches of refused pages.
 */
#ifndef MB_READOPT_H
#define MB_READOPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_win32.h"
#include "state.h"

/* How long a client that handed its section back has to say AdoptDone (then its claims are
 * booked and its section audited all the same), and to fetch the list of refused ranges. */
#define MB_ADOPT_DEADLINE_MS 5000

/* The lseek calls one booking may make to find the section's data (under the broker lock): past
 * them, the claims left are booked as if they were holes, in address order. 65536 seeks cost a
 * few tens of ms; an honest section has a data run per MB_EXTENT_GAP at most. */
#define MB_READOPT_MAX_SEEKS 65536

/*
 * Claims pr's pages (one reservation of s, resolved by the caller) as committed at level, for s
 * re-registering a handed-back section (s->adopting). Pages committed or claimed already are left
 * as they are. Claims past the room mb_books_claim_room leaves are refused in claim order: only
 * the range's pages before *cut are claimed, and the pages from *cut to its end that were neither
 * committed nor claimed are punched (*cut is the range's end when all of it is claimed). S_OK, or
 * E_OUTOFMEMORY with the reason in why when nothing could be claimed.
 */
HRESULT mb_readopt_claim(mb_broker *b, mb_section *s, const mb_page_range *pr, int level,
			 uint64_t *cut, char *why, size_t whylen);

/*
 * Books every claim of s in the order above, ends its adoption (s->adopting false) and audits it
 * once, forgiving. s->readopt_booked and s->readopt_refused say what it did.
 */
void mb_readopt_book(mb_broker *b, mb_section *s);

/* A range of refused pages. */
typedef struct mb_readopt_range {
	uint64_t address, size;
} mb_readopt_range;

/*
 * Up to max refused ranges of s, lowest addresses first, into out; their marks are cleared (the
 * client is told now). *more: others remain. Returns how many.
 */
size_t mb_readopt_refused(mb_section *s, mb_readopt_range *out, size_t max, bool *more);

/*
 * The deadlines at now: the claims of sections that did not say AdoptDone in time are booked (and
 * the sections audited), and refused marks nobody fetched are cleared.
 */
void mb_readopt_expire(mb_broker *b, uint64_t now);

#endif
