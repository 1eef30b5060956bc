/*
 * audit.c: honest charging: sections against commits.
 */
#include "audit.h"

#include <inttypes.h>
#include <unistd.h>

#include "clock.h"
#include "credit.h"
#include "log.h"
#include "mb_credit.h"
#include "mb_win32.h"
#include "memfd.h"

uint64_t mb_audit_session(mb_broker *b, mb_section *s, bool forgive, bool *offender)
{
	/* Read before the credit word: a client takes credit before it writes a local commit and
	 * gives it back only after punching the pages out, so nothing allocated here is missed. */
	uint64_t allocated = mb_section_allocated(s);
	uint64_t discarded = 0, offending = 0;
	off_t pos = 0;
	/* Pages the client committed by itself against its credit are not in the map until it
	 * reports them: that many written, uncommitted pages of its reservations are those local
	 * commits, not offences. */
	uint64_t tolerated = 0, local = mb_credit_used(s);
	const bool credit_page = s->credit_word != NULL;

	/* The common case costs one fstat: no more pages than commits means nothing to look at. */
	if (allocated <= mb_section_committed(s) + local)
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
				} else if ((region == NULL || st == 0) &&
					   (tolerated + MB_PAGE_SIZE <= local ||
					    tolerated + MB_PAGE_SIZE <=
						(local = mb_credit_used(s)))) {
					/* A local commit, possibly in a reservation the client made
					 * by itself and has not reported yet (the word is read
					 * again before calling it an offence: the client may have
					 * made one since). */
					tolerated += MB_PAGE_SIZE;
				} else if (region != NULL && (st & MB_PAGE_DISCARDED) &&
					   mb_books_fits(&b->books, s, MB_LEVELS - 1,
							 MB_PAGE_SIZE) == MB_FIT_OK &&
					   mb_region_update(&s->map, region, pg, 1, 0, 0,
							    MB_PAGE_RESET | MB_PAGE_DISCARDED,
							    MB_PAGE_COMMITTED, -1, NULL) == 1) {
					/* Win32 lets a program write to MEM_RESET pages: the page
					 * is in use again, so it is charged again, at the level it
					 * was committed at (a discard keeps it). */
					mb_books_charge(&b->books, s, MB_PAGE_SIZE);
				} else {
					drop = true;
					/* A page the broker discarded, or refused when its
					 * client re-registered it, may still be written by a
					 * client that has not heard yet: dropped, no offence. */
					if (region == NULL ||
					    !(st & (MB_PAGE_DISCARDED | MB_PAGE_REFUSED)))
						offending += MB_PAGE_SIZE;
				}
			}
			if (drop && run == UINT64_MAX)
				run = a;
			if (!drop && run != UINT64_MAX) {
				mb_memfd_discard(s->section_fd, run, a - run);
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
			*offender = true;
	}
	return discarded;
}

int mb_audit_all(mb_broker *b, uint64_t *offenders, int max, uint64_t *discarded)
{
	int n = 0;

	*discarded = 0;
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s)) {
		bool offender = false;
		/* Restored after a crash without books: what it holds is charged as a whole until
		 * its client hands the memfd back and registers it. Nothing to compare yet. */
		if (s->held > 0)
			continue;
		/* Re-registering: its claims are not booked yet (readopt.h books them, at AdoptDone
		 * or its deadline, and then audits it once, forgiving). */
		if (s->adopting)
			continue;
		*discarded += mb_audit_session(b, s, false, &offender);
		if (offender && n < max)
			offenders[n++] = s->id;
	}
	return n;
}

void mb_audit_books(mb_broker *b)
{
	static uint64_t logged; /* violations already in the journal */
	uint64_t sum = 0;

	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		sum += mb_section_charged(s);
	if (sum != b->books.ledger.committed)
		mb_books_violation(&b->books, "the ledger differs from the sum of the sessions",
				   b->books.ledger.committed, sum);
	if (b->books.violations > logged) {
		mb_log(LOG_CRIT,
		       "books invariant broken %" PRIu64 " time(s), latest: %s (ledger %" PRIu64
		       ", sessions %" PRIu64 ", budget %" PRIu64 ")",
		       b->books.violations - logged, b->books.violation_where,
		       b->books.ledger.committed, sum, b->books.ledger.budget);
		logged = b->books.violations;
	}
}

void mb_audit_adoption_done(mb_broker *b, mb_section *s)
{
	bool offender = false;

	if (!s->adopting)
		return;
	s->adopting = false;
	mb_audit_session(b, s, true, &offender);
}
