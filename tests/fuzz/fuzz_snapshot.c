/*
 * fuzz_snapshot.c: fuzz target for the books snapshot decoder (daemon/snapshot.c), which a
 * restarted broker runs on a file it finds in systemd's descriptor store.
 *
 * The input is offered twice: as a whole snapshot file (header included: the magic, version,
 * length and CRC checks), and as a payload framed with a correct header, so that the fuzzer
 * reaches the protobuf decoder and the books' checks behind the CRC. Whatever is accepted must
 * hold together as a restore relies on: every section's charge adds up to the total charged,
 * which is within the budget; ids are unique, ascending and below the next id; each section's
 * committed pages are the ones its regions count; every MEM_RESET range lies in a region of its
 * section. Violations abort().
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "mb_win32.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_snapshot: %s:%d: invariant violated: %s\n",          \
				__FILE__, __LINE__, #cond);                                        \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void check(const mb_snapshot *snap)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < snap->nsections; i++) {
		const mb_section *s = snap->sections[i];
		size_t pages = 0;
		CHECK(s->id != 0 && s->id < snap->next_id);
		CHECK(i == 0 || s->id > snap->sections[i - 1]->id);
		CHECK(s->state == MB_SECTION_RESTORED && s->section_fd < 0 && s->pidfd < 0);
		CHECK(strlen(s->name) <= MB_WIRE_MAX_NAME);
		for (mb_region *r = mb_regmap_first(&s->map); r != NULL;
		     r = mb_regmap_next(&s->map, r)) {
			CHECK(r->base >= MB_ADDRESS_MIN && r->base + r->span <= MB_ADDRESS_LIMIT);
			pages += mb_region_committed_in(r, 0, r->size / MB_PAGE_SIZE);
		}
		CHECK(pages == s->map.committed_pages);
		sum += mb_section_charged(s);
	}
	CHECK(sum == snap->charged);
	CHECK(sum <= snap->budget);
	for (size_t i = 0; i < snap->nresets; i++) {
		const mb_snapshot_reset *r = &snap->resets[i];
		const mb_section *s = NULL;
		for (size_t j = 0; j < snap->nsections && s == NULL; j++)
			if (snap->sections[j]->id == r->section_id)
				s = snap->sections[j];
		CHECK(s != NULL && mb_regmap_find(&s->map, (uintptr_t)r->address) != NULL);
		CHECK(r->level >= 0 && r->level < MB_LEVELS);
	}
}

static void decode(const uint8_t *file, size_t len)
{
	mb_snapshot *snap = NULL;
	char why[256];
	int rv = mb_snapshot_decode(file, len, MB_ADDRESS_LIMIT, &snap, why, sizeof(why));

	CHECK(rv == 0 || rv == -EINVAL || rv == -ENOMEM);
	CHECK((rv == 0) == (snap != NULL));
	if (rv == -EINVAL)
		CHECK(why[0] != '\0');
	if (snap != NULL)
		check(snap);
	mb_snapshot_free(snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *file = malloc(MB_SNAPSHOT_HEADER + size + 1);
	uint32_t crc = (uint32_t)crc32_z(0, data, size);

	decode(data, size);
	memcpy(file, MB_SNAPSHOT_MAGIC, 8);
	for (int i = 0; i < 4; i++) {
		file[8 + i] = (uint8_t)(MB_SNAPSHOT_VERSION >> (8 * i));
		file[12 + i] = (uint8_t)(crc >> (8 * i));
	}
	for (int i = 0; i < 8; i++)
		file[16 + i] = (uint8_t)((uint64_t)size >> (8 * i));
	memcpy(file + MB_SNAPSHOT_HEADER, data, size);
	decode(file, MB_SNAPSHOT_HEADER + size);
	free(file);
	return 0;
}
