/*
 * throttle.c: refusal periods for uids whose processes were disconnected for offences.
 */
#include "throttle.h"

#include <string.h>

void mb_throttle_init(mb_throttle *t)
{
	memset(t, 0, sizeof(*t));
}

static int find(const mb_throttle *t, uid_t uid)
{
	for (int i = 0; i < t->n; i++)
		if (t->e[i].uid == uid)
			return i;
	return -1;
}

uint64_t mb_throttle_strike(mb_throttle *t, uid_t uid, uint64_t now_ms)
{
	int i = find(t, uid);

	if (i < 0) {
		if (t->n < MB_THROTTLE_UIDS) {
			i = t->n++;
		} else {
			/* Full: the entry whose refusal ends first gives way. */
			i = 0;
			for (int j = 1; j < t->n; j++)
				if (t->e[j].until_ms < t->e[i].until_ms)
					i = j;
		}
		t->e[i].uid = uid;
		t->e[i].strikes = 0;
	} else if (now_ms - t->e[i].last_ms >= MB_THROTTLE_FORGET_MS) {
		t->e[i].strikes = 0;
	}
	uint64_t period = t->first_ms ? t->first_ms : MB_THROTTLE_FIRST_MS;
	for (uint32_t k = 0; k < t->e[i].strikes && period < MB_THROTTLE_MAX_MS; k++)
		period *= 2;
	if (period > MB_THROTTLE_MAX_MS)
		period = MB_THROTTLE_MAX_MS;
	t->e[i].strikes++;
	t->e[i].last_ms = now_ms;
	t->e[i].until_ms = now_ms + period;
	return period;
}

uint64_t mb_throttle_wait(const mb_throttle *t, uid_t uid, uint64_t now_ms)
{
	int i = find(t, uid);

	if (i < 0 || t->e[i].until_ms <= now_ms)
		return 0;
	return t->e[i].until_ms - now_ms;
}
