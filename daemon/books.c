/*
 * books.c: charging, refunding and the quota checks.
 */
#include "books.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mb_books_init(mb_books *k, uint64_t budget, const mb_config *conf)
{
	memset(k, 0, sizeof(*k));
	mb_ledger_init(&k->ledger, budget);
	k->conf = conf;
}

mb_fit mb_books_fits(const mb_books *k, const mb_section *s, int level, uint64_t bytes)
{
	mb_quota_view q = {.client_committed = mb_section_charged(s),
			   .client_max = k->conf->client_max};

	for (int i = 0; i < k->conf->ngroups; i++) {
		const mb_group_conf *g = &k->conf->groups[i];
		if (i == s->group) {
			q.group_committed = k->group_charged[i];
			q.group_max = g->max;
		} else if (g->reserve > k->group_charged[i]) {
			q.others_reserve_unused += g->reserve - k->group_charged[i];
		}
	}
	return mb_ledger_check(&k->ledger, level, bytes, &q);
}

/* limit - used, or 0 past it. */
static uint64_t room_under(uint64_t limit, uint64_t used)
{
	return used < limit ? limit - used : 0;
}

uint64_t mb_books_claim_room(const mb_books *k, const mb_section *s, uint64_t claimed)
{
	uint64_t held = mb_section_charged(s);
	uint64_t room = room_under(k->ledger.budget, held);

	if (k->conf->client_max != 0 && room_under(k->conf->client_max, held) < room)
		room = room_under(k->conf->client_max, held);
	if (s->group >= 0 && k->conf->groups[s->group].max != 0 &&
	    room_under(k->conf->groups[s->group].max, k->group_charged[s->group]) < room)
		room = room_under(k->conf->groups[s->group].max, k->group_charged[s->group]);
	return room_under(room, claimed);
}

uint64_t mb_books_max_reservations(const mb_books *k)
{
	return k->conf->client_max_reservations ? k->conf->client_max_reservations
						: MB_MAX_RESERVATIONS;
}

uint64_t mb_books_max_reserved(const mb_books *k)
{
	return k->conf->client_max_reserved ? k->conf->client_max_reserved : MB_MAX_RESERVED;
}

bool mb_books_reserve_fits(const mb_books *k, const mb_section *s, uint64_t size)
{
	uint64_t count = s->map.count + s->reserve_count;
	uint64_t bytes = s->map.reserved_bytes + s->reserve_bytes;
	uint64_t max = mb_books_max_reserved(k);

	return count < mb_books_max_reservations(k) && bytes <= max && size <= max - bytes;
}

void mb_books_violation(mb_books *k, const char *where, uint64_t got, uint64_t want)
{
	k->violations++;
	k->violation_where = where;
	if (k->abort_on_violation) {
		/* The one system call here: the broker is about to die anyway. */
		fprintf(stderr,
			"membrokerd: books invariant broken: %s (%" PRIu64 " against %" PRIu64
			")\n",
			where, got, want);
		abort();
	}
}

void mb_books_charge(mb_books *k, mb_section *s, uint64_t bytes)
{
	mb_ledger_charge(&k->ledger, bytes);
	if (s->group >= 0)
		k->group_charged[s->group] += bytes;
	/* Every path checked the fit before charging; none may take the total past the budget. */
	if (bytes > 0 && k->ledger.committed > k->ledger.budget)
		mb_books_violation(k, "a charge took the total past the budget",
				   k->ledger.committed, k->ledger.budget);
}

void mb_books_refund(mb_books *k, mb_section *s, uint64_t bytes)
{
	mb_ledger_refund(&k->ledger, bytes);
	if (s->group >= 0)
		k->group_charged[s->group] -=
		    bytes > k->group_charged[s->group] ? k->group_charged[s->group] : bytes;
}

long mb_books_commit_pages(mb_books *k, mb_section *s, const mb_page_range *pr, int level)
{
	long gained = mb_region_commit_at(&s->map, pr->region, pr->first, pr->count, 0, level);

	if (gained < 0)
		return -1;
	mb_books_charge(k, s, (uint64_t)gained * MB_PAGE_SIZE);
	if (level > s->max_level)
		s->max_level = level;
	return gained;
}

void mb_books_join_group(mb_books *k, mb_section *s)
{
	s->group = mb_config_match_group(k->conf, s->uid, s->gid, s->name);
	if (s->group >= 0) {
		k->group_charged[s->group] += mb_section_charged(s);
		k->group_sessions[s->group]++;
	}
}

void mb_books_enter(mb_books *k, mb_section *s)
{
	s->group = -1;
	mb_ledger_charge(&k->ledger, mb_section_charged(s));
	k->credit_total += s->credit;
	mb_books_join_group(k, s);
}

void mb_books_leave(mb_books *k, mb_section *s)
{
	k->credit_total -= s->credit < k->credit_total ? s->credit : k->credit_total;
	mb_books_refund(k, s, mb_section_charged(s));
	if (s->group >= 0 && k->group_sessions[s->group] > 0)
		k->group_sessions[s->group]--;
}

void mb_books_clear_groups(mb_books *k)
{
	memset(k->group_charged, 0, sizeof(k->group_charged));
	memset(k->group_sessions, 0, sizeof(k->group_sessions));
}
