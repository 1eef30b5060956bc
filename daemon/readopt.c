/*
 * readopt.c: claims of a handed-back section, and their booking (see readopt.h).
 */
#include "readopt.h"

#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "arbiter.h"
#include "audit.h"
#include "books.h"
#include "clock.h"
#include "log.h"
#include "mb_extent.h"
#include "memfd.h"

#define PG ((uint64_t)MB_PAGE_SIZE)

/* Page states of one claim at level: claimed, not committed, not refused. */
#define CLAIM_MASK	  (MB_PAGE_COMMITTED | MB_PAGE_CLAIMED | MB_PAGE_REFUSED | MB_PAGE_LEVEL_MASK)
#define CLAIM_WANT(level) ((uint8_t)(MB_PAGE_CLAIMED | MB_PAGE_LEVEL(level)))

/* Punches the pages of [first, first+count) of region that are neither committed nor claimed. */
static void punch_unheld(mb_section *s, mb_region *region, size_t first, size_t count)
{
	const uint8_t held = MB_PAGE_COMMITTED | MB_PAGE_CLAIMED;
	size_t end = first + count;

	for (size_t i = mb_region_find(region, first, end, held, 0); i < end;) {
		size_t j = mb_region_run_end(region, i, end, held, 0);
		mb_memfd_discard(s->section_fd, region->base + i * PG, (j - i) * PG);
		i = mb_region_find(region, j, end, held, 0);
	}
}

HRESULT mb_readopt_claim(mb_broker *b, mb_section *s, const mb_page_range *pr, int level,
			 uint64_t *cut, char *why, size_t whylen)
{
	const uint8_t taken = MB_PAGE_COMMITTED | MB_PAGE_CLAIMED;
	uint64_t fresh = mb_region_count(pr->region, pr->first, pr->count, taken, 0);
	uint64_t room = mb_books_claim_room(&b->books, s, s->claimed_pages * PG) / PG;
	size_t end = pr->first + pr->count, keep = end;

	*cut = pr->start + (uint64_t)pr->count * PG;
	if (fresh > room) {
		/* Only the first `room` new pages: the end of the range where they run out. */
		uint64_t n = 0;
		keep = pr->first;
		while (keep < end && n < room) {
			size_t i = mb_region_find(pr->region, keep, end, taken, 0);
			if (i >= end)
				break;
			size_t j = mb_region_run_end(pr->region, i, end, taken, 0);
			keep = j - i > room - n ? i + (size_t)(room - n) : j;
			n += keep - i;
		}
		*cut = pr->region->base + (uint64_t)keep * PG;
		punch_unheld(s, pr->region, keep, end - keep);
		b->refusals++;
		mb_log_event(LOG_NOTICE, MB_MSGID_REFUSED, (int)s->pid, (unsigned)s->uid, level,
			     (unsigned long long)((fresh - n) * PG), (unsigned)E_OUTOFMEMORY,
			     "re-registered commit from 0x%" PRIx64
			     " refused and discarded: the client's claims pass its limit, its "
			     "group's or the budget",
			     *cut);
		if (keep == pr->first) {
			snprintf(why, whylen,
				 "claim at 0x%" PRIx64 " of %" PRIu64
				 " bytes refused: with the %" PRIu64 " bytes charged and %" PRIu64
				 " claimed it passes this client's limit, its group's or the "
				 "budget; its pages were discarded",
				 (uint64_t)pr->start, fresh * PG, mb_section_charged(s),
				 s->claimed_pages * PG);
			return E_OUTOFMEMORY;
		}
	}
	if (mb_region_update(&s->map, pr->region, pr->first, keep - pr->first, taken, 0, 0xff,
			     CLAIM_WANT(level), -1, NULL) < 0) {
		snprintf(why, whylen, "no memory for page state");
		return E_OUTOFMEMORY;
	}
	s->claimed_pages += fresh < room ? fresh : room;
	return S_OK;
}

/* Books pages [first, first+count) of region (all claimed at level, none committed): what fits,
 * from the start of the run; the rest is refused and punched. */
static void book_run(mb_broker *b, mb_section *s, mb_region *region, size_t first, size_t count,
		     int level)
{
	mb_page_range pr = {region, region->base + first * PG, first, count};
	size_t n = count;
	mb_decision d = mb_arbiter_decide_pages(b, s, level, &pr, false, false);

	if (d.verdict != MB_VERDICT_GRANT) {
		/* The decision took back the credit in the way and reclaimed what it could: the
		 * largest prefix that fits now (fits is monotonic in bytes). */
		size_t lo = 0, hi = count - 1;
		while (lo < hi) {
			size_t mid = lo + (hi - lo + 1) / 2;
			if (mb_books_fits(&b->books, s, level, mid * PG) == MB_FIT_OK)
				lo = mid;
			else
				hi = mid - 1;
		}
		n = lo;
		pr.count = n;
		if (n > 0 && mb_arbiter_decide_pages(b, s, level, &pr, false, false).verdict !=
				 MB_VERDICT_GRANT)
			n = 0;
	}
	if (n > 0 && mb_books_commit_pages(&b->books, s, &pr, level) < 0)
		n = 0;
	s->readopt_booked += n * PG;
	if (n == count)
		return;
	mb_region_update(&s->map, region, first + n, count - n, CLAIM_MASK, CLAIM_WANT(level), 0xff,
			 MB_PAGE_REFUSED, -1, NULL);
	mb_memfd_discard(s->section_fd, region->base + (first + n) * PG, (count - n) * PG);
	s->refused_pages += count - n;
	s->readopt_refused += (count - n) * PG;
	b->refusals++;
	mb_log_event(LOG_NOTICE, MB_MSGID_REFUSED, (int)s->pid, (unsigned)s->uid, level,
		     (unsigned long long)((count - n) * PG), (unsigned)E_OUTOFMEMORY,
		     "re-registered commit at 0x%" PRIx64 " refused and discarded: %s",
		     (uint64_t)(region->base + (first + n) * PG),
		     d.verdict == MB_VERDICT_GRANT ? "no memory for page state"
						   : mb_reason_text(d.reason));
}

/*
 * The claims of one region at level: with data_only, the pages the memfd holds (each data run of a
 * claimed run, mb_extent.h, booked as its own run; *seeks bounds the lseek calls); without, every
 * claim left (the holes, and pages the client wrote since the first pass looked).
 */
static void book_region(mb_broker *b, mb_section *s, mb_region *region, int level, bool data_only,
			unsigned *seeks)
{
	size_t pages = region->size / MB_PAGE_SIZE;

	for (size_t i = mb_region_find(region, 0, pages, CLAIM_MASK, CLAIM_WANT(level)); i < pages;
	     i = mb_region_find(region, i, pages, CLAIM_MASK, CLAIM_WANT(level))) {
		size_t j = mb_region_run_end(region, i, pages, CLAIM_MASK, CLAIM_WANT(level));
		uint64_t a = region->base + i * PG, e = region->base + j * PG;
		if (!data_only) {
			book_run(b, s, region, i, j - i, level);
			i = j;
			continue;
		}
		while (a < e) {
			uint64_t ds, de;
			mb_extent_data(s->section_fd, a, e, MB_EXTENT_GAP, seeks, &ds, &de);
			/* [a, ds) is a hole (left for the second pass), [ds, de) data. */
			if (de > ds)
				book_run(b, s, region, (size_t)((ds - region->base) / PG),
					 (size_t)((de - ds) / PG), level);
			a = de;
		}
		i = j;
	}
}

void mb_readopt_book(mb_broker *b, mb_section *s)
{
	if (!s->adopting)
		return;
	unsigned seeks = MB_READOPT_MAX_SEEKS;

	s->readopt_booked = s->readopt_refused = 0;
	/* What the section holds first: refusing it loses the client's data, refusing a hole
	 * loses nothing. Within each, the levels that may lose least first. */
	for (int pass = 0; pass < 2 && s->claimed_pages > 0; pass++)
		for (int level = MB_LEVELS - 1; level >= 0; level--)
			for (mb_region *r = mb_regmap_first(&s->map); r != NULL;
			     r = mb_regmap_next(&s->map, r))
				book_region(b, s, r, level, pass == 0, &seeks);
	s->claimed_pages = 0;
	s->refused_deadline_ms = mb_now_ms() + MB_ADOPT_DEADLINE_MS;
	mb_log(s->readopt_refused > 0 ? LOG_NOTICE : LOG_INFO,
	       "client pid %d re-registered its section (session %" PRIu64 "): %" PRIu64
	       " KiB booked at their levels, %" PRIu64 " KiB refused and discarded",
	       (int)s->pid, s->id, s->readopt_booked >> 10, s->readopt_refused >> 10);
	mb_audit_adoption_done(b, s);
	mb_arbiter_update_pressure(b);
}

size_t mb_readopt_refused(mb_section *s, mb_readopt_range *out, size_t max, bool *more)
{
	size_t n = 0;

	*more = false;
	for (mb_region *r = mb_regmap_first(&s->map); r != NULL && s->refused_pages > 0;
	     r = mb_regmap_next(&s->map, r)) {
		size_t pages = r->size / MB_PAGE_SIZE;
		for (size_t i = mb_region_find(r, 0, pages, MB_PAGE_REFUSED, MB_PAGE_REFUSED);
		     i < pages; i = mb_region_find(r, i, pages, MB_PAGE_REFUSED, MB_PAGE_REFUSED)) {
			if (n == max) {
				*more = true;
				return n;
			}
			size_t j = mb_region_run_end(r, i, pages, MB_PAGE_REFUSED, MB_PAGE_REFUSED);
			out[n].address = r->base + i * PG;
			out[n++].size = (j - i) * PG;
			mb_region_update(&s->map, r, i, j - i, MB_PAGE_REFUSED, MB_PAGE_REFUSED,
					 MB_PAGE_REFUSED, 0, -1, NULL);
			s->refused_pages -= j - i < s->refused_pages ? j - i : s->refused_pages;
			i = j;
		}
	}
	/* The count is an upper bound (the client may have released refused pages): none left. */
	s->refused_pages = 0;
	return n;
}

void mb_readopt_expire(mb_broker *b, uint64_t now)
{
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s)) {
		if (s->adopting && now >= s->adopt_deadline_ms) {
			mb_log(LOG_NOTICE,
			       "pid %d did not finish re-registering in time; booking what it "
			       "claimed and auditing its section",
			       (int)s->pid);
			mb_readopt_book(b, s);
		} else if (!s->adopting && s->refused_pages > 0 && now >= s->refused_deadline_ms) {
			mb_readopt_range r[MB_WIRE_MAX_REFUSED];
			bool more = true;
			while (more)
				mb_readopt_refused(s, r, MB_WIRE_MAX_REFUSED, &more);
		}
	}
}
