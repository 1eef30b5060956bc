/*
 * snapshot.c: the books snapshot: the broker's state to bytes and back, with every check a
 * restore relies on.
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "credit.h"
#include "mb_win32.h"
#include "snapshot.pb-c.h"

typedef Membroker__Snapshot__V1__Snapshot pb_snapshot;
typedef Membroker__Snapshot__V1__Section pb_section;
typedef Membroker__Snapshot__V1__Region pb_region;
typedef Membroker__Snapshot__V1__PageRun pb_run;
typedef Membroker__Snapshot__V1__Mapped pb_mapped;
typedef Membroker__Snapshot__V1__ResetRange pb_reset;

#define STATE_BITS (MB_PAGE_COMMITTED | MB_PAGE_RESET | MB_PAGE_DISCARDED | MB_PAGE_CLAIMED)
/* What a page run keeps: its state and its level. A refused mark is not kept: the client that
 * has not fetched it re-registers with the next broker anyway (its AdoptDone went unanswered). */
#define RUN_BITS (STATE_BITS | MB_PAGE_LEVEL_MASK)

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---- encoding ------------------------------------------------------------------------------ */

/* The protobuf-c structures of one section; freed after packing. */
typedef struct enc_section {
	pb_section msg;
	pb_region *regions;
	pb_region **region_ptrs;
	pb_run **run_ptrs; /* all regions' runs, region after region */
	pb_run *runs;
	pb_mapped *mapped;
	pb_mapped **mapped_ptrs;
} enc_section;

static void enc_section_free(enc_section *e)
{
	free(e->regions);
	free(e->region_ptrs);
	free(e->run_ptrs);
	free(e->runs);
	free(e->mapped);
	free(e->mapped_ptrs);
}

/* Runs of equal non-zero page state and level in region, written to runs (NULL: only counted). */
static size_t region_runs(const mb_region *r, pb_run *runs)
{
	size_t pages = r->size / MB_PAGE_SIZE, n = 0;

	for (size_t i = mb_region_run_end(r, 0, pages, STATE_BITS, 0); i < pages;) {
		uint8_t st = mb_region_state(r, i) & RUN_BITS;
		size_t j = mb_region_run_end(r, i, pages, RUN_BITS, st);
		if (runs != NULL) {
			membroker__snapshot__v1__page_run__init(&runs[n]);
			runs[n].first = i;
			runs[n].count = j - i;
			runs[n].state = st & STATE_BITS;
			runs[n].level = (uint32_t)mb_page_level(st);
		}
		n++;
		i = mb_region_run_end(r, j, pages, STATE_BITS, 0);
	}
	return n;
}

static int enc_section_fill(enc_section *e, const mb_section *s)
{
	pb_section *m = &e->msg;
	size_t nregions = s->map.count, nruns = 0, k = 0, ri = 0;
	struct stat st;

	membroker__snapshot__v1__section__init(m);
	m->id = s->id;
	m->pid = (uint32_t)s->pid;
	m->uid = (uint32_t)s->uid;
	m->gid = (uint32_t)s->gid;
	m->name = (char *)s->name;
	m->inode = s->section_fd >= 0 && fstat(s->section_fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
	m->fd_token.data = (uint8_t *)s->token;
	m->fd_token.len = sizeof(s->token);
	m->fd_token_used = s->token_used;
	m->attach_token.data = (uint8_t *)s->attach_token;
	m->attach_token.len = sizeof(s->attach_token);
	m->adopted = s->adopted;
	m->adopting = s->adopting;
	m->max_level = (uint32_t)s->max_level;
	m->offences = s->offences;
	m->credit = s->credit;
	m->reserve_count = s->reserve_count;
	m->reserve_bytes = s->reserve_bytes;
	m->committed = mb_section_committed(s);
	m->held = s->held;
	m->credit_growth = s->credit_growth;

	for (mb_region *r = mb_regmap_first(&s->map); r != NULL; r = mb_regmap_next(&s->map, r))
		nruns += region_runs(r, NULL);
	e->regions = calloc(nregions ? nregions : 1, sizeof(*e->regions));
	e->region_ptrs = calloc(nregions ? nregions : 1, sizeof(*e->region_ptrs));
	e->runs = calloc(nruns ? nruns : 1, sizeof(*e->runs));
	e->run_ptrs = calloc(nruns ? nruns : 1, sizeof(*e->run_ptrs));
	e->mapped = calloc(s->nmapped ? s->nmapped : 1, sizeof(*e->mapped));
	e->mapped_ptrs = calloc(s->nmapped ? s->nmapped : 1, sizeof(*e->mapped_ptrs));
	if (!e->regions || !e->region_ptrs || !e->runs || !e->run_ptrs || !e->mapped ||
	    !e->mapped_ptrs)
		return -ENOMEM;
	for (mb_region *r = mb_regmap_first(&s->map); r != NULL;
	     r = mb_regmap_next(&s->map, r), ri++) {
		pb_region *pr = &e->regions[ri];
		size_t n = region_runs(r, &e->runs[k]);
		membroker__snapshot__v1__region__init(pr);
		pr->address = r->base;
		pr->size = r->size;
		pr->n_runs = n;
		pr->runs = &e->run_ptrs[k];
		for (size_t i = 0; i < n; i++)
			e->run_ptrs[k + i] = &e->runs[k + i];
		k += n;
		e->region_ptrs[ri] = pr;
	}
	m->n_regions = nregions;
	m->regions = e->region_ptrs;
	for (uint32_t i = 0; i < s->nmapped; i++) {
		membroker__snapshot__v1__mapped__init(&e->mapped[i]);
		e->mapped[i].address = s->mapped[i].address;
		e->mapped[i].size = s->mapped[i].size;
		e->mapped_ptrs[i] = &e->mapped[i];
	}
	m->n_mapped = s->nmapped;
	m->mapped = e->mapped_ptrs;
	return 0;
}

int mb_snapshot_encode(const mb_broker *b, uint64_t configured_budget, uint8_t **out, size_t *len)
{
	pb_snapshot snap = MEMBROKER__SNAPSHOT__V1__SNAPSHOT__INIT;
	size_t n = 0, nresets = 0, i = 0;
	enc_section *secs = NULL;
	pb_section **sec_ptrs = NULL;
	pb_reset *resets = NULL, **reset_ptrs = NULL;
	uint8_t *buf = NULL;
	int rv = -ENOMEM;

	*out = NULL;
	*len = 0;
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		n++;
	for (int level = 0; level < MB_LEVELS; level++) {
		mb_reset_range *r;
		TAILQ_FOREACH(r, &b->resets[level], link)
			nresets++;
	}
	secs = calloc(n ? n : 1, sizeof(*secs));
	sec_ptrs = calloc(n ? n : 1, sizeof(*sec_ptrs));
	resets = calloc(nresets ? nresets : 1, sizeof(*resets));
	reset_ptrs = calloc(nresets ? nresets : 1, sizeof(*reset_ptrs));
	if (!secs || !sec_ptrs || !resets || !reset_ptrs)
		goto out;
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s), i++) {
		if (enc_section_fill(&secs[i], s) != 0)
			goto out;
		sec_ptrs[i] = &secs[i].msg;
	}
	i = 0;
	for (int level = 0; level < MB_LEVELS; level++) {
		mb_reset_range *r;
		TAILQ_FOREACH(r, &b->resets[level], link) {
			membroker__snapshot__v1__reset_range__init(&resets[i]);
			resets[i].section_id = r->section_id;
			resets[i].address = r->address;
			resets[i].pages = r->pages;
			resets[i].level = (uint32_t)level;
			reset_ptrs[i] = &resets[i];
			i++;
		}
	}
	snap.budget = b->books.ledger.budget;
	snap.configured_budget = configured_budget;
	snap.charged = b->books.ledger.committed;
	snap.next_id = b->reg.next_id;
	snap.section_size = b->section_size;
	snap.n_sections = n;
	snap.sections = sec_ptrs;
	snap.n_resets = nresets;
	snap.resets = reset_ptrs;
	snap.reclaimed_bytes = b->reclaimed_bytes;
	snap.offences = b->offences;

	size_t payload = membroker__snapshot__v1__snapshot__get_packed_size(&snap);
	buf = malloc(MB_SNAPSHOT_HEADER + payload);
	if (buf == NULL)
		goto out;
	membroker__snapshot__v1__snapshot__pack(&snap, buf + MB_SNAPSHOT_HEADER);
	memcpy(buf, MB_SNAPSHOT_MAGIC, 8);
	put_le(buf + 8, MB_SNAPSHOT_VERSION, 4);
	put_le(buf + 12, crc32_z(0, buf + MB_SNAPSHOT_HEADER, payload), 4);
	put_le(buf + 16, payload, 8);
	*out = buf;
	*len = MB_SNAPSHOT_HEADER + payload;
	buf = NULL;
	rv = 0;
out:
	for (size_t j = 0; secs != NULL && j < n; j++)
		enc_section_free(&secs[j]);
	free(secs);
	free(sec_ptrs);
	free(resets);
	free(reset_ptrs);
	free(buf);
	return rv;
}

/* ---- decoding ------------------------------------------------------------------------------ */

static int refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* One section's books from the message, checked. 0, -EINVAL (why set) or -ENOMEM. */
static int decode_section(const pb_section *m, uint64_t section_size, mb_section **out, char *why,
			  size_t whylen)
{
	mb_section *s;
	uint64_t last_end = 0;

	*out = NULL;
	if (m->id == 0 || m->pid == 0 || m->pid > INT32_MAX)
		return refuse(why, whylen, "a section without an id or an owner");
	if (m->fd_token.len != MB_WIRE_TOKEN_LEN || m->attach_token.len != MB_WIRE_TOKEN_LEN)
		return refuse(why, whylen, "section %" PRIu64 ": tokens of the wrong length",
			      m->id);
	if (m->name == NULL || strlen(m->name) > MB_WIRE_MAX_NAME)
		return refuse(why, whylen, "section %" PRIu64 ": name too long", m->id);
	if (m->max_level >= MB_LEVELS)
		return refuse(why, whylen, "section %" PRIu64 ": level %u", m->id, m->max_level);
	s = mb_section_new((pid_t)m->pid, (uid_t)m->uid, (gid_t)m->gid);
	if (s == NULL)
		return -ENOMEM;
	s->id = m->id;
	s->state = MB_SECTION_RESTORED;
	snprintf(s->name, sizeof(s->name), "%s", m->name);
	memcpy(s->token, m->fd_token.data, sizeof(s->token));
	s->token_used = m->fd_token_used;
	memcpy(s->attach_token, m->attach_token.data, sizeof(s->attach_token));
	s->adopted = m->adopted;
	s->adopting = m->adopting;
	s->max_level = (int)m->max_level;
	s->offences = m->offences;
	s->credit = m->credit;
	s->reserve_count = m->reserve_count;
	s->reserve_bytes = m->reserve_bytes;
	s->held = m->held;
	s->credit_growth = m->credit_growth;
	*out = s;
	/* Bounded like any growth (credit.h); a larger one is a corrupt snapshot's. */
	if (m->credit_growth > MB_CREDIT_MAX_GROWTH)
		return refuse(why, whylen, "section %" PRIu64 ": credit growth %u", m->id,
			      m->credit_growth);

	for (size_t i = 0; i < m->n_regions; i++) {
		const pb_region *r = m->regions[i];
		mb_region *region;
		uint64_t prev = 0;
		int rv;

		if ((r->address & (MB_GRANULARITY - 1)) != 0 || r->size == 0 ||
		    (r->size & (MB_PAGE_SIZE - 1)) != 0 || r->address < MB_ADDRESS_MIN ||
		    r->size > section_size || r->address > section_size - mb_span_of(r->size) ||
		    r->address < last_end)
			return refuse(why, whylen,
				      "section %" PRIu64 ": reservation at 0x%" PRIx64
				      " of %" PRIu64 " bytes is misplaced",
				      m->id, r->address, r->size);
		last_end = r->address + mb_span_of(r->size);
		rv = mb_regmap_insert(&s->map, (uintptr_t)r->address, (size_t)r->size, 0, &region);
		if (rv == -ENOMEM)
			return -ENOMEM;
		if (rv != 0)
			return refuse(why, whylen, "section %" PRIu64 ": reservation at 0x%" PRIx64,
				      m->id, r->address);
		for (size_t j = 0; j < r->n_runs; j++) {
			const pb_run *run = r->runs[j];
			uint64_t pages = r->size / MB_PAGE_SIZE;
			if (run->count == 0 || run->first < prev || run->first >= pages ||
			    run->count > pages - run->first || run->state == 0 ||
			    (run->state & ~(uint32_t)STATE_BITS) != 0 || run->level >= MB_LEVELS ||
			    ((run->state & MB_PAGE_CLAIMED) &&
			     (run->state != MB_PAGE_CLAIMED || !m->adopting)))
				return refuse(why, whylen,
					      "section %" PRIu64
					      ": a page run of the reservation at "
					      "0x%" PRIx64 " is out of place",
					      m->id, r->address);
			prev = run->first + run->count;
			if (mb_region_update(
				&s->map, region, (size_t)run->first, (size_t)run->count, 0, 0, 0xff,
				(uint8_t)(run->state | MB_PAGE_LEVEL(run->level)), -1, NULL) < 0)
				return -ENOMEM;
			if (run->state == MB_PAGE_CLAIMED)
				s->claimed_pages += run->count;
		}
	}
	if (mb_section_committed(s) != m->committed)
		return refuse(why, whylen,
			      "section %" PRIu64 ": page runs add up to %" PRIu64
			      " committed bytes, the section says %" PRIu64,
			      m->id, mb_section_committed(s), m->committed);
	if (m->n_mapped > 65536)
		return refuse(why, whylen, "section %" PRIu64 ": too many mapped ranges", m->id);
	if (m->n_mapped > 0) {
		s->mapped = calloc(m->n_mapped, sizeof(*s->mapped));
		if (s->mapped == NULL)
			return -ENOMEM;
		s->mapped_cap = (uint32_t)m->n_mapped;
	}
	for (size_t i = 0; i < m->n_mapped; i++) {
		const pb_mapped *mp = m->mapped[i];
		if (mp->size == 0 || mp->address > UINT64_MAX - mp->size ||
		    (i > 0 && mp->address <= s->mapped[i - 1].address) ||
		    s->mapped_bytes > UINT64_MAX - mp->size)
			return refuse(why, whylen,
				      "section %" PRIu64 ": mapped ranges out of order", m->id);
		s->mapped[i].address = mp->address;
		s->mapped[i].size = mp->size;
		s->mapped_bytes += mp->size;
		s->nmapped++;
	}
	return 0;
}

static int id_cmp(const void *a, const void *b)
{
	uint64_t x = (*(mb_section *const *)a)->id, y = (*(mb_section *const *)b)->id;
	return x < y ? -1 : x > y;
}

static mb_section *find_section(const mb_snapshot *snap, uint64_t id)
{
	mb_section key = {.id = id}, *kp = &key, **hit;

	hit = bsearch(&kp, snap->sections, snap->nsections, sizeof(*snap->sections), id_cmp);
	return hit != NULL ? *hit : NULL;
}

/* The whole snapshot from its message, checked. */
static int decode_books(const pb_snapshot *m, uint64_t section_size, mb_snapshot *snap, char *why,
			size_t whylen)
{
	uint64_t charged = 0;
	int rv;

	if (m->section_size != section_size)
		return refuse(why, whylen,
			      "its sections are %" PRIu64 " bytes, this broker's %" PRIu64,
			      m->section_size, section_size);
	snap->budget = m->budget;
	snap->configured_budget = m->configured_budget;
	snap->charged = m->charged;
	snap->next_id = m->next_id;
	snap->reclaimed_bytes = m->reclaimed_bytes;
	snap->offences = m->offences;
	snap->sections = calloc(m->n_sections ? m->n_sections : 1, sizeof(*snap->sections));
	snap->inodes = calloc(m->n_sections ? m->n_sections : 1, sizeof(*snap->inodes));
	snap->resets = calloc(m->n_resets ? m->n_resets : 1, sizeof(*snap->resets));
	if (!snap->sections || !snap->inodes || !snap->resets)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_sections; i++) {
		mb_section *s;
		rv = decode_section(m->sections[i], section_size, &s, why, whylen);
		if (s != NULL)
			snap->sections[snap->nsections++] = s;
		if (rv != 0)
			return rv;
		snap->inodes[i] = m->sections[i]->inode;
		if (s->id >= m->next_id)
			return refuse(why, whylen,
				      "section %" PRIu64 " is past the next id %" PRIu64, s->id,
				      m->next_id);
		if (s->credit > UINT64_MAX / 4 || s->held > UINT64_MAX / 4 ||
		    mb_section_charged(s) > UINT64_MAX / 4 - charged)
			return refuse(why, whylen, "section %" PRIu64 ": charges out of range",
				      s->id);
		charged += mb_section_charged(s);
	}
	/* Ids must be unique and the lookups below need them sorted; the inodes follow. */
	for (size_t i = 1; i < snap->nsections; i++)
		if (snap->sections[i]->id <= snap->sections[i - 1]->id)
			return refuse(why, whylen, "section ids out of order or repeated");
	if (charged != m->charged)
		return refuse(why, whylen,
			      "sections add up to %" PRIu64
			      " bytes charged, the books say %" PRIu64,
			      charged, m->charged);
	if (charged > m->budget)
		return refuse(why, whylen,
			      "%" PRIu64 " bytes charged exceed its budget of %" PRIu64, charged,
			      m->budget);
	for (size_t i = 0; i < m->n_resets; i++) {
		const pb_reset *r = m->resets[i];
		mb_section *s = find_section(snap, r->section_id);
		mb_region *region = s ? mb_regmap_find(&s->map, (uintptr_t)r->address) : NULL;
		if (region == NULL || r->level >= MB_LEVELS || r->pages == 0 ||
		    r->pages > region->size / MB_PAGE_SIZE ||
		    (r->address & (MB_PAGE_SIZE - 1)) != 0)
			return refuse(why, whylen, "a MEM_RESET range outside its section's books");
		snap->resets[snap->nresets++] = (mb_snapshot_reset){.section_id = r->section_id,
								    .address = r->address,
								    .pages = r->pages,
								    .level = (int)r->level};
		s->resets++;
	}
	return 0;
}

int mb_snapshot_decode(const uint8_t *buf, size_t len, uint64_t section_size, mb_snapshot **out,
		       char *why, size_t whylen)
{
	pb_snapshot *m;
	mb_snapshot *snap;
	uint64_t payload;
	uint32_t version, crc;
	int rv;

	*out = NULL;
	if (len == 0)
		return refuse(why, whylen, "it is empty (already restored from)");
	if (len < MB_SNAPSHOT_HEADER || memcmp(buf, MB_SNAPSHOT_MAGIC, 8) != 0)
		return refuse(why, whylen, "it is not a membroker snapshot (%zu bytes, bad magic)",
			      len);
	version = (uint32_t)get_le(buf + 8, 4);
	crc = (uint32_t)get_le(buf + 12, 4);
	payload = get_le(buf + 16, 8);
	if (version != MB_SNAPSHOT_VERSION)
		return refuse(why, whylen, "format version %u, this broker reads version %d",
			      version, MB_SNAPSHOT_VERSION);
	if (payload != len - MB_SNAPSHOT_HEADER)
		return refuse(why, whylen,
			      "truncated or padded: %zu payload bytes, the header says %" PRIu64,
			      len - MB_SNAPSHOT_HEADER, payload);
	if ((uint32_t)crc32_z(0, buf + MB_SNAPSHOT_HEADER, (size_t)payload) != crc)
		return refuse(why, whylen, "corrupt: the payload's CRC-32 does not match");
	m = membroker__snapshot__v1__snapshot__unpack(NULL, (size_t)payload,
						      buf + MB_SNAPSHOT_HEADER);
	if (m == NULL)
		return refuse(why, whylen, "its payload does not decode");
	snap = calloc(1, sizeof(*snap));
	if (snap == NULL) {
		membroker__snapshot__v1__snapshot__free_unpacked(m, NULL);
		return -ENOMEM;
	}
	rv = decode_books(m, section_size, snap, why, whylen);
	membroker__snapshot__v1__snapshot__free_unpacked(m, NULL);
	if (rv != 0) {
		mb_snapshot_free(snap);
		return rv;
	}
	*out = snap;
	return 0;
}

void mb_snapshot_free(mb_snapshot *snap)
{
	if (snap == NULL)
		return;
	for (size_t i = 0; i < snap->nsections; i++)
		mb_section_free(snap->sections[i], false);
	free(snap->sections);
	free(snap->inodes);
	free(snap->resets);
	free(snap);
}

/* ---- files --------------------------------------------------------------------------------- */

int mb_snapshot_to_memfd(const uint8_t *buf, size_t len)
{
	int fd = memfd_create("membroker-snapshot", MFD_CLOEXEC);
	size_t done = 0;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			close(fd);
			return -err;
		}
		done += (size_t)n;
	}
	return fd;
}

int mb_snapshot_read_fd(int fd, uint8_t **buf, size_t *len, char *why, size_t whylen)
{
	struct stat st;
	size_t done = 0;
	uint8_t *p;

	*buf = NULL;
	*len = 0;
	if (fstat(fd, &st) != 0)
		return refuse(why, whylen, "cannot stat it: %s", strerror(errno));
	if (!S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > MB_SNAPSHOT_MAX_PAYLOAD + MB_SNAPSHOT_HEADER)
		return refuse(why, whylen, "not a file of at most %" PRIu64 " bytes",
			      MB_SNAPSHOT_MAX_PAYLOAD + MB_SNAPSHOT_HEADER);
	p = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (p == NULL)
		return -ENOMEM;
	while (done < (size_t)st.st_size) {
		ssize_t n = pread(fd, p + done, (size_t)st.st_size - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	*buf = p;
	*len = done;
	return 0;
}
