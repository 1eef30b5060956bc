/*
 * unit_snapshot.c: the books snapshot codec (daemon/snapshot.c) without sockets: a broker's books
 * encoded and decoded again are the same books; truncated, corrupted, foreign and inconsistent
 * snapshots are refused with a reason and nothing crashes (random damage included, under the
 * sanitizers in the ASan build).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "books.h"
#include "broker.h"
#include "memfd.h"
#include "snapshot.h"
#include "snapshot.pb-c.h"

#define MIB  ((uint64_t)1 << 20)
#define GRAN ((uint64_t)65536)

/* A section of the test broker with a real (small) memfd, so its inode is recorded. */
static mb_section *add_section(mb_broker *b, pid_t pid, uid_t uid, const char *name)
{
	mb_section *s = mb_section_new(pid, uid, uid);
	assert_non_null(s);
	s->section_fd = mb_memfd_create("unit-snapshot", 16 * MIB);
	assert_true(s->section_fd >= 0);
	snprintf(s->name, sizeof(s->name), "%s", name);
	for (size_t i = 0; i < sizeof(s->token); i++) {
		s->token[i] = (uint8_t)(pid + i);
		s->attach_token[i] = (uint8_t)(uid * 3 + i);
	}
	s->state = MB_SECTION_ATTACHED;
	assert_int_equal(mb_registry_add_section(&b->reg, s), 0);
	mb_books_join_group(&b->books, s);
	return s;
}

/* Reserves [base, base+size) and commits pages [first, first+count) of it, charged. */
static mb_region *reserve_commit(mb_broker *b, mb_section *s, uint64_t base, uint64_t size,
				 size_t first, size_t count)
{
	mb_region *r;
	assert_int_equal(mb_regmap_insert(&s->map, (uintptr_t)base, (size_t)size, 0, &r), 0);
	if (count > 0) {
		mb_page_range pr = {.region = r, .first = first, .count = count};
		assert_int_equal(mb_books_commit_pages(&b->books, s, &pr, 1), (long)count);
	}
	return r;
}

/* A broker with three sections: commits, reset and discarded pages, credit, mapped ranges, a
 * MEM_RESET range queued, a section restored earlier without books. */
static void books(mb_broker *b)
{
	assert_int_equal(mb_broker_init(b, 256 * MIB), 0);
	mb_section *a = add_section(b, 1001, 1000, "alpha");
	mb_region *r = reserve_commit(b, a, 16 * GRAN, 64 * GRAN, 3, 100);
	reserve_commit(b, a, 1024 * GRAN, 5 * MB_PAGE_SIZE, 0, 5);
	reserve_commit(b, a, 4096 * GRAN, 2 * GRAN, 0, 0); /* reserved only */
	/* Pages committed at other levels: the runs split where the level changes. */
	mb_region *lv = reserve_commit(b, a, 2048 * GRAN, GRAN, 0, 0);
	mb_page_range pr2 = {.region = lv, .first = 0, .count = 6};
	mb_page_range pr0 = {.region = lv, .first = 6, .count = 4};
	assert_int_equal(mb_books_commit_pages(&b->books, a, &pr2, 2), 6);
	assert_int_equal(mb_books_commit_pages(&b->books, a, &pr0, 0), 4);
	/* Pages 10..19 reset, 20..24 discarded (refunded). */
	mb_region_update(&a->map, r, 10, 10, 0, 0, 0, MB_PAGE_RESET, -1, NULL);
	size_t lost = 0;
	mb_region_update(&a->map, r, 20, 5, 0, 0, 0xff, MB_PAGE_DISCARDED, -1, &lost);
	mb_books_refund(&b->books, a, lost * MB_PAGE_SIZE);
	mb_reset_range *rr = calloc(1, sizeof(*rr));
	rr->section_id = a->id;
	rr->address = 16 * GRAN + 10 * MB_PAGE_SIZE;
	rr->pages = 10;
	TAILQ_INSERT_TAIL(&b->resets[1], rr, link);
	a->resets = 1;
	a->max_level = 1;
	a->credit = 3 * MIB;
	mb_books_charge(&b->books, a, a->credit);
	b->books.credit_total += a->credit;
	a->credit_growth = 2;
	a->reserve_count = 17;
	a->reserve_bytes = 5 * GRAN;
	a->mapped = calloc(2, sizeof(*a->mapped));
	a->mapped[0] = (mb_mapped){.address = 0x7000000000, .size = GRAN};
	a->mapped[1] = (mb_mapped){.address = 0x7100000000, .size = 3 * GRAN};
	a->nmapped = a->mapped_cap = 2;
	a->mapped_bytes = 4 * GRAN;
	a->offences = 1;
	a->token_used = true;

	mb_section *c = add_section(b, 1002, 1001, "");
	c->state = MB_SECTION_DETACHED;
	mb_region *cr = reserve_commit(b, c, 32 * GRAN, 1024 * GRAN, 0, 4096);
	c->adopted = c->adopting = true;
	/* Claims of its client re-registering (readopt.h), not booked yet. */
	assert_int_equal(mb_region_update(&c->map, cr, 5000, 10, 0, 0, 0xff,
					  MB_PAGE_CLAIMED | MB_PAGE_LEVEL(2), -1, NULL),
			 0);
	c->claimed_pages = 10;

	mb_section *d = add_section(b, 1003, 0, "restored");
	d->state = MB_SECTION_RESTORED;
	d->held = 2 * MIB;
	mb_books_charge(&b->books, d, d->held);
	b->reclaimed_bytes = 12345;
	b->offences = 7;
}

static uint8_t *encode(mb_broker *b, size_t *len)
{
	uint8_t *buf;
	assert_int_equal(mb_snapshot_encode(b, 200 * MIB, &buf, len), 0);
	assert_true(*len > MB_SNAPSHOT_HEADER);
	return buf;
}

/* Every page of every region of x and y has the same state. */
static void assert_same_map(const mb_section *x, const mb_section *y)
{
	const mb_region *rx = mb_regmap_first(&x->map), *ry = mb_regmap_first(&y->map);

	assert_int_equal(x->map.count, y->map.count);
	assert_int_equal(x->map.committed_pages, y->map.committed_pages);
	assert_int_equal(x->map.reserved_bytes, y->map.reserved_bytes);
	for (int l = 0; l < MB_PAGE_LEVELS; l++)
		assert_int_equal(x->map.committed_at[l], y->map.committed_at[l]);
	assert_int_equal(x->claimed_pages, y->claimed_pages);
	for (; rx != NULL && ry != NULL; rx = mb_regmap_next(&x->map, (mb_region *)rx),
					 ry = mb_regmap_next(&y->map, (mb_region *)ry)) {
		assert_int_equal(rx->base, ry->base);
		assert_int_equal(rx->size, ry->size);
		for (size_t p = 0; p < rx->size / MB_PAGE_SIZE; p++)
			assert_int_equal(mb_region_state(rx, p), mb_region_state(ry, p));
	}
	assert_null(rx);
	assert_null(ry);
}

static void test_round_trip(void **state)
{
	(void)state;
	mb_broker b;
	mb_snapshot *snap;
	char why[256] = "";
	size_t len;

	books(&b);
	uint8_t *buf = encode(&b, &len);
	assert_int_equal(mb_snapshot_decode(buf, len, b.section_size, &snap, why, sizeof(why)), 0);
	assert_int_equal(snap->budget, 256 * MIB);
	assert_int_equal(snap->configured_budget, 200 * MIB);
	assert_int_equal(snap->charged, b.books.ledger.committed);
	assert_int_equal(snap->next_id, b.reg.next_id);
	assert_int_equal(snap->reclaimed_bytes, 12345);
	assert_int_equal(snap->offences, 7);
	assert_int_equal(snap->nsections, 3);

	uint64_t sum = 0;
	size_t i = 0;
	for (mb_section *s = mb_registry_first(&b.reg); s != NULL; s = mb_registry_next(s), i++) {
		mb_section *t = snap->sections[i];
		struct stat st;
		assert_int_equal(fstat(s->section_fd, &st), 0);
		assert_int_equal(snap->inodes[i], st.st_ino);
		assert_int_equal(t->id, s->id);
		assert_int_equal(t->state, MB_SECTION_RESTORED);
		assert_int_equal(t->pid, s->pid);
		assert_int_equal(t->uid, s->uid);
		assert_int_equal(t->gid, s->gid);
		assert_string_equal(t->name, s->name);
		assert_memory_equal(t->token, s->token, sizeof(s->token));
		assert_int_equal(t->token_used, s->token_used);
		assert_memory_equal(t->attach_token, s->attach_token, sizeof(s->attach_token));
		assert_int_equal(t->adopted, s->adopted);
		assert_int_equal(t->adopting, s->adopting);
		assert_int_equal(t->max_level, s->max_level);
		assert_int_equal(t->offences, s->offences);
		assert_int_equal(t->credit, s->credit);
		assert_int_equal(t->reserve_count, s->reserve_count);
		assert_int_equal(t->reserve_bytes, s->reserve_bytes);
		assert_int_equal(t->held, s->held);
		assert_int_equal(t->credit_growth, s->credit_growth);
		assert_int_equal(t->resets, s->resets);
		assert_int_equal(t->nmapped, s->nmapped);
		assert_int_equal(t->mapped_bytes, s->mapped_bytes);
		for (uint32_t k = 0; k < s->nmapped; k++) {
			assert_int_equal(t->mapped[k].address, s->mapped[k].address);
			assert_int_equal(t->mapped[k].size, s->mapped[k].size);
		}
		assert_same_map(s, t);
		assert_int_equal(mb_section_charged(t), mb_section_charged(s));
		assert_int_equal(t->section_fd, -1);
		assert_int_equal(t->pidfd, -1);
		sum += mb_section_charged(t);
	}
	/* The books hold together: the total charged is the sum of the sections, to the byte. */
	assert_int_equal(sum, b.books.ledger.committed);
	assert_int_equal(snap->nresets, 1);
	assert_int_equal(snap->resets[0].section_id, mb_registry_first(&b.reg)->id);
	assert_int_equal(snap->resets[0].address, 16 * GRAN + 10 * MB_PAGE_SIZE);
	assert_int_equal(snap->resets[0].pages, 10);
	assert_int_equal(snap->resets[0].level, 1);

	/* A section taken out is the taker's; the rest are freed with the snapshot. */
	mb_section *taken = snap->sections[0];
	snap->sections[0] = NULL;
	mb_section_free(taken, false);
	mb_snapshot_free(snap);
	free(buf);
	mb_broker_fini(&b);
}

static void test_empty_broker(void **state)
{
	(void)state;
	mb_broker b;
	mb_snapshot *snap;
	char why[256];
	size_t len;

	assert_int_equal(mb_broker_init(&b, 64 * MIB), 0);
	uint8_t *buf = encode(&b, &len);
	assert_int_equal(mb_snapshot_decode(buf, len, b.section_size, &snap, why, sizeof(why)), 0);
	assert_int_equal(snap->nsections, 0);
	assert_int_equal(snap->charged, 0);
	assert_int_equal(snap->budget, 64 * MIB);
	mb_snapshot_free(snap);
	free(buf);
	mb_broker_fini(&b);
}

/* Refused with a reason containing `reason`; nothing returned. */
static void assert_refused(const uint8_t *buf, size_t len, uint64_t section_size,
			   const char *reason)
{
	mb_snapshot *snap = (mb_snapshot *)1;
	char why[256] = "";

	assert_int_equal(mb_snapshot_decode(buf, len, section_size, &snap, why, sizeof(why)),
			 -EINVAL);
	assert_null(snap);
	if (strstr(why, reason) == NULL)
		fail_msg("refused for \"%s\", expected \"%s\"", why, reason);
}

static void test_truncated(void **state)
{
	(void)state;
	mb_broker b;
	size_t len;

	books(&b);
	uint8_t *buf = encode(&b, &len);
	assert_refused(buf, 0, b.section_size, "empty");
	assert_refused(buf, 10, b.section_size, "not a membroker snapshot");
	assert_refused(buf, MB_SNAPSHOT_HEADER, b.section_size, "truncated");
	for (size_t cut = 1; cut < len - MB_SNAPSHOT_HEADER; cut += 1 + cut / 4)
		assert_refused(buf, len - cut, b.section_size, "truncated");
	/* Longer than it says is refused too: the file is exactly what was written. */
	uint8_t *more = calloc(1, len + 8);
	memcpy(more, buf, len);
	assert_refused(more, len + 8, b.section_size, "truncated or padded");
	free(more);
	free(buf);
	mb_broker_fini(&b);
}

static void test_corrupt(void **state)
{
	(void)state;
	mb_broker b;
	size_t len;

	books(&b);
	uint8_t *buf = encode(&b, &len);
	/* Any flipped payload bit is caught by the CRC. */
	for (size_t at = MB_SNAPSHOT_HEADER; at < len; at += 7) {
		buf[at] ^= 0x10;
		assert_refused(buf, len, b.section_size, "corrupt");
		buf[at] ^= 0x10;
	}
	buf[0] ^= 1;
	assert_refused(buf, len, b.section_size, "bad magic");
	buf[0] ^= 1;
	buf[8] = 2;
	assert_refused(buf, len, b.section_size, "format version 2");
	buf[8] = MB_SNAPSHOT_VERSION;
	buf[12] ^= 0xff;
	assert_refused(buf, len, b.section_size, "corrupt");
	buf[12] ^= 0xff;
	/* A broker with sections of another size cannot use these. */
	assert_refused(buf, len, b.section_size / 2, "this broker's");
	free(buf);
	mb_broker_fini(&b);
}

/* Frames a payload as a snapshot file with a correct CRC. */
static uint8_t *frame(const uint8_t *payload, size_t n, size_t *len)
{
	uint8_t *buf = malloc(MB_SNAPSHOT_HEADER + n + 1);
	uint32_t crc = (uint32_t)crc32_z(0, payload, n);

	memcpy(buf, MB_SNAPSHOT_MAGIC, 8);
	for (int i = 0; i < 4; i++) {
		buf[8 + i] = (uint8_t)(MB_SNAPSHOT_VERSION >> (8 * i));
		buf[12 + i] = (uint8_t)(crc >> (8 * i));
	}
	for (int i = 0; i < 8; i++)
		buf[16 + i] = (uint8_t)((uint64_t)n >> (8 * i));
	memcpy(buf + MB_SNAPSHOT_HEADER, payload, n);
	*len = MB_SNAPSHOT_HEADER + n;
	return buf;
}

/* Re-frames a decoded-and-edited message. */
static uint8_t *reframe(Membroker__Snapshot__V1__Snapshot *m, size_t *len)
{
	size_t n = membroker__snapshot__v1__snapshot__get_packed_size(m);
	uint8_t *payload = malloc(n + 1), *buf;

	membroker__snapshot__v1__snapshot__pack(m, payload);
	buf = frame(payload, n, len);
	free(payload);
	return buf;
}

static Membroker__Snapshot__V1__Snapshot *unpack(const uint8_t *buf, size_t len)
{
	Membroker__Snapshot__V1__Snapshot *m = membroker__snapshot__v1__snapshot__unpack(
	    NULL, len - MB_SNAPSHOT_HEADER, buf + MB_SNAPSHOT_HEADER);
	assert_non_null(m);
	return m;
}

/* Books that do not hold together are refused even with a good CRC: what a broker with a bug, or
 * anything else that wrote the file, could leave. */
static void test_inconsistent(void **state)
{
	(void)state;
	mb_broker b;
	size_t len, n;
	uint8_t *bad;

	books(&b);
	uint8_t *buf = encode(&b, &len);
	Membroker__Snapshot__V1__Snapshot *m = unpack(buf, len);

	m->charged += MB_PAGE_SIZE;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "bytes charged");
	free(bad);
	m->charged -= MB_PAGE_SIZE;

	uint64_t budget = m->budget;
	m->budget = m->charged - 1;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "exceed its budget");
	free(bad);
	m->budget = budget;

	m->sections[0]->committed += MB_PAGE_SIZE;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "page runs add up");
	free(bad);
	m->sections[0]->committed -= MB_PAGE_SIZE;

	uint64_t base = m->sections[0]->regions[1]->address;
	m->sections[0]->regions[1]->address = m->sections[0]->regions[0]->address + GRAN;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "misplaced");
	free(bad);
	m->sections[0]->regions[1]->address = base + 1;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "misplaced");
	free(bad);
	m->sections[0]->regions[1]->address = base;

	Membroker__Snapshot__V1__PageRun *run = m->sections[0]->regions[0]->runs[0];
	uint64_t count = run->count;
	run->count = 1 << 20;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "out of place");
	free(bad);
	run->count = count;
	run->state = 0x80;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "out of place");
	free(bad);
	run->state = MB_PAGE_COMMITTED;
	run->level = MB_LEVELS;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "out of place");
	free(bad);
	run->level = 1;
	/* Claims only while the section re-registers, and never on committed pages. */
	run->state = MB_PAGE_CLAIMED | MB_PAGE_COMMITTED;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "out of place");
	free(bad);
	run->state = MB_PAGE_CLAIMED;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "out of place"); /* section 0 is not adopting */
	free(bad);
	run->state = MB_PAGE_COMMITTED;

	uint64_t id = m->sections[1]->id;
	m->sections[1]->id = m->sections[0]->id;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "repeated");
	free(bad);
	m->sections[1]->id = m->next_id;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "past the next id");
	free(bad);
	m->sections[1]->id = id;

	m->sections[2]->attach_token.len = 3;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "tokens");
	free(bad);
	m->sections[2]->attach_token.len = MB_WIRE_TOKEN_LEN;

	m->sections[0]->credit_growth = 99;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "credit growth");
	free(bad);
	m->sections[0]->credit_growth = 0;

	m->resets[0]->section_id = 999;
	bad = reframe(m, &n);
	assert_refused(bad, n, b.section_size, "MEM_RESET");
	free(bad);

	membroker__snapshot__v1__snapshot__free_unpacked(m, NULL);
	free(buf);
	mb_broker_fini(&b);
}

/* Random payloads and random damage under a correct CRC: refused or accepted, never a crash
 * or a leak (the ASan build checks both), and what is accepted holds together. */
static void test_random_damage(void **state)
{
	(void)state;
	mb_broker b;
	size_t len;

	books(&b);
	uint8_t *buf = encode(&b, &len);
	size_t plen = len - MB_SNAPSHOT_HEADER;
	uint8_t *payload = malloc(plen);
	unsigned seed = 12345;

	for (int round = 0; round < 3000; round++) {
		size_t n = plen, flen;
		memcpy(payload, buf + MB_SNAPSHOT_HEADER, plen);
		if (round % 3 == 0)
			n = (size_t)rand_r(&seed) % plen;
		for (int k = 0; k < 1 + round % 5; k++)
			payload[(size_t)rand_r(&seed) % plen] = (uint8_t)rand_r(&seed);
		if (round % 7 == 0)
			for (size_t k = 0; k < n; k++)
				payload[k] = (uint8_t)rand_r(&seed);
		uint8_t *f = frame(payload, n, &flen);
		mb_snapshot *snap = NULL;
		char why[256];
		int rv = mb_snapshot_decode(f, flen, b.section_size, &snap, why, sizeof(why));
		assert_true(rv == 0 || rv == -EINVAL);
		if (rv == 0) {
			uint64_t sum = 0;
			for (size_t i = 0; i < snap->nsections; i++)
				sum += mb_section_charged(snap->sections[i]);
			assert_int_equal(sum, snap->charged);
			assert_true(sum <= snap->budget);
		}
		mb_snapshot_free(snap);
		free(f);
	}
	free(payload);
	free(buf);
	mb_broker_fini(&b);
}

static void test_memfd(void **state)
{
	(void)state;
	mb_broker b;
	mb_snapshot *snap;
	char why[256];
	size_t len, rlen;
	uint8_t *back;

	books(&b);
	uint8_t *buf = encode(&b, &len);
	int fd = mb_snapshot_to_memfd(buf, len);
	assert_true(fd >= 0);
	assert_int_equal(mb_snapshot_read_fd(fd, &back, &rlen, why, sizeof(why)), 0);
	assert_int_equal(rlen, len);
	assert_memory_equal(back, buf, len);
	assert_int_equal(mb_snapshot_decode(back, rlen, b.section_size, &snap, why, sizeof(why)),
			 0);
	assert_int_equal(snap->nsections, 3);
	mb_snapshot_free(snap);
	free(back);
	/* A consumed snapshot (emptied after a restore) reads as empty and is refused as such. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(mb_snapshot_read_fd(fd, &back, &rlen, why, sizeof(why)), 0);
	assert_refused(back, rlen, b.section_size, "empty");
	free(back);
	close(fd);
	free(buf);
	mb_broker_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),	 cmocka_unit_test(test_empty_broker),
	    cmocka_unit_test(test_truncated),	 cmocka_unit_test(test_corrupt),
	    cmocka_unit_test(test_inconsistent), cmocka_unit_test(test_random_damage),
	    cmocka_unit_test(test_memfd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
