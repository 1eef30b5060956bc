/*
 * decide.c: grant / park / refuse, as a pure function.
 */
#include "decide.h"

mb_decision mb_decide(const mb_decision_in *in)
{
	mb_decision d = {MB_VERDICT_GRANT, MB_REASON_NONE};

	if (in->fit == MB_FIT_OK)
		return d;
	if (in->credit_in_way && !in->credit_taken) {
		d.verdict = MB_VERDICT_TAKE_CREDIT;
		return d;
	}
	d.verdict = MB_VERDICT_REFUSE;
	if (in->fit == MB_FIT_CLIENT_MAX) {
		d.reason = MB_REASON_CLIENT_MAX;
		return d;
	}
	if (in->fit == MB_FIT_GROUP_MAX) {
		d.reason = MB_REASON_GROUP_MAX;
		return d;
	}
	/* MB_FIT_CEILING */
	if (in->reclaimable && !in->reclaimed) {
		d.verdict = MB_VERDICT_RECLAIM;
		return d;
	}
	if (in->bytes > in->ceiling) {
		d.reason = MB_REASON_TOO_LARGE;
		return d;
	}
	if (!in->waiting && in->wait_ms == 0) {
		d.reason = MB_REASON_BUDGET;
		return d;
	}
	if (in->stopping) {
		d.reason = MB_REASON_STOPPING;
		return d;
	}
	if (in->waiting || in->parkable) {
		d.verdict = MB_VERDICT_PARK;
		return d;
	}
	d.reason = MB_REASON_BUDGET;
	return d;
}

const char *mb_reason_text(mb_reason r)
{
	switch (r) {
	case MB_REASON_NONE:
		return "granted";
	case MB_REASON_CLIENT_MAX:
		return "over the client's limit";
	case MB_REASON_GROUP_MAX:
		return "over the group's limit";
	case MB_REASON_BUDGET:
		return "the budget is full for this level";
	case MB_REASON_TOO_LARGE:
		return "larger than the level's whole share of the budget";
	case MB_REASON_STOPPING:
		return "the broker is shutting down";
	}
	return "unknown";
}
