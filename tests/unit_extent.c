/*
 * unit_extent.c: data runs of a memfd (common/mb_extent.c), on real sparse memfds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mb_extent.h"

#define PG ((uint64_t)4096)

static int sparse(const uint64_t *pages, size_t n)
{
	int fd = memfd_create("unit_extent", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(1 << 30)), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(pwrite(fd, "x", 1, (off_t)(pages[i] * PG + 17)), 1);
	return fd;
}

static void test_runs_and_gaps(void **state)
{
	/* Pages 2-3 and 6 (a 2-page hole between), 600 (far), 1000-1001. */
	static const uint64_t pages[] = {2, 3, 6, 600, 1000, 1001};
	int fd = sparse(pages, sizeof(pages) / sizeof(pages[0]));
	unsigned seeks = UINT_MAX;
	uint64_t s, e;

	(void)state;
	/* Without a gap: extent by extent. */
	mb_extent_data(fd, 0, 2000 * PG, 0, &seeks, &s, &e);
	assert_int_equal(s, 2 * PG);
	assert_int_equal(e, 4 * PG);
	mb_extent_data(fd, e, 2000 * PG, 0, &seeks, &s, &e);
	assert_int_equal(s, 6 * PG);
	assert_int_equal(e, 7 * PG);
	/* With a 1 MiB gap: 2-6 as one run, 600 apart (more than 1 MiB after 7). */
	mb_extent_data(fd, 0, 2000 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 2 * PG);
	assert_int_equal(e, 7 * PG);
	mb_extent_data(fd, e, 2000 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 600 * PG);
	assert_int_equal(e, 601 * PG);
	mb_extent_data(fd, e, 2000 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 1000 * PG);
	assert_int_equal(e, 1002 * PG);
	/* Nothing after: start == end == to. */
	mb_extent_data(fd, e, 2000 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 2000 * PG);
	assert_int_equal(e, 2000 * PG);
	/* Clipped to the range asked: from inside an extent, to its middle. */
	mb_extent_data(fd, 3 * PG, 1001 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 3 * PG);
	assert_int_equal(e, 7 * PG);
	mb_extent_data(fd, 999 * PG, 1001 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 1000 * PG);
	assert_int_equal(e, 1001 * PG);
	/* An empty range, and one without data. */
	mb_extent_data(fd, 5 * PG, 5 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 5 * PG);
	mb_extent_data(fd, 7 * PG, 600 * PG, MB_EXTENT_GAP, &seeks, &s, &e);
	assert_int_equal(s, 600 * PG);
	assert_int_equal(e, 600 * PG);
	close(fd);
}

/* The seeks bound the work: once spent, no more data is reported. */
static void test_seeks_bound(void **state)
{
	static const uint64_t pages[] = {0, 10, 20, 30};
	int fd = sparse(pages, 4);
	unsigned seeks = 4;
	uint64_t s, e;

	(void)state;
	mb_extent_data(fd, 0, 100 * PG, 0, &seeks, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, PG);
	mb_extent_data(fd, e, 100 * PG, 0, &seeks, &s, &e);
	assert_int_equal(s, 10 * PG);
	assert_int_equal(seeks, 0);
	mb_extent_data(fd, e, 100 * PG, 0, &seeks, &s, &e);
	assert_int_equal(s, 100 * PG);
	assert_int_equal(e, 100 * PG);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_runs_and_gaps),
	    cmocka_unit_test(test_seeks_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
