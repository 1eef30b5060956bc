/*
 * sysmem.c: MemTotal and the cgroup (v2 memory.max or v1 memory.limit_in_bytes) limit.
 */
#include "sysmem.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static uint64_t meminfo_total(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	uint64_t kib = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kib) == 1)
			break;
	fclose(f);
	return kib * 1024;
}

static uint64_t read_limit(const char *path)
{
	FILE *f = fopen(path, "r");
	char buf[64];
	uint64_t v = 0;

	if (f == NULL)
		return 0;
	if (fgets(buf, sizeof(buf), f) != NULL && strncmp(buf, "max", 3) != 0)
		if (sscanf(buf, "%" SCNu64, &v) != 1)
			v = 0;
	fclose(f);
	return v;
}

static uint64_t cgroup_limit(void)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[512], path[700];
	uint64_t limit = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *rel = strrchr(line, ':');
		line[strcspn(line, "\n")] = '\0';
		if (rel == NULL)
			continue;
		rel++;
		if (strncmp(line, "0::", 3) == 0) {
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", rel);
			limit = read_limit(path);
		} else if (strstr(line, ":memory:") != NULL) {
			snprintf(path, sizeof(path),
				 "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", rel);
			limit = read_limit(path);
			if (limit == 0)
				limit = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
		}
		if (limit != 0)
			break;
	}
	fclose(f);
	return limit;
}

uint64_t mb_sysmem_available(const char **source)
{
	uint64_t total = meminfo_total();
	uint64_t cg = cgroup_limit();

	if (cg != 0 && (total == 0 || cg < total)) {
		if (source)
			*source = "cgroup memory limit";
		return cg;
	}
	if (source)
		*source = "MemTotal";
	return total;
}
