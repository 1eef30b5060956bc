/*
 * mb_size.c: sizes as operators write them, for the daemon, its configuration and membrokerctl.
 */
#include "mb_size.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int mb_parse_size(const char *s, uint64_t total, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	if (s == NULL || !isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (strcmp(end, "%") == 0) {
		if (v == 0 || v > 100)
			return -1;
		*out = (uint64_t)((unsigned __int128)total * v / 100);
		return *out == 0 ? -1 : 0;
	}
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		mult = 1ULL << 10;
		break;
	case 'M':
		mult = 1ULL << 20;
		break;
	case 'G':
		mult = 1ULL << 30;
		break;
	case 'T':
		mult = 1ULL << 40;
		break;
	default:
		return -1;
	}
	if (*end != '\0') {
		end++;
		if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0 || strcmp(end, "b") == 0)
			end += strlen(end);
		if (*end != '\0')
			return -1;
	}
	if (v > UINT64_MAX / mult)
		return -1;
	*out = (uint64_t)v * mult;
	return 0;
}
