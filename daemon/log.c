/*
 * log.c: stderr logging with journal priority prefixes.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-journal.h>

static int max_priority = LOG_INFO;
static int journal_prefix = -1;

void mb_log_set_level(int priority)
{
	max_priority = priority;
}

int mb_log_parse_level(const char *name)
{
	static const struct {
		const char *name;
		int prio;
	} levels[] = {{"debug", LOG_DEBUG},
		      {"info", LOG_INFO},
		      {"notice", LOG_NOTICE},
		      {"warning", LOG_WARNING},
		      {"error", LOG_ERR}};
	for (unsigned i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (name != NULL && strcmp(name, levels[i].name) == 0)
			return levels[i].prio;
	return -1;
}

void mb_log(int priority, const char *fmt, ...)
{
	static const char *const names[] = {"emergency", "alert",  "critical", "error",
					    "warning",	 "notice", "info",     "debug"};
	char line[1024];
	va_list ap;

	if (priority > max_priority)
		return;
	/* journald sets JOURNAL_STREAM for the stderr it captures; only then is "<N>" understood.
	 */
	if (journal_prefix < 0)
		journal_prefix = getenv("JOURNAL_STREAM") != NULL;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (journal_prefix)
		fprintf(stderr, "<%d>%s\n", priority, line);
	else
		fprintf(stderr, "membrokerd: %s: %s\n", names[priority & 7], line);
}

/* True when this event may be written: at most 20 a second, so a client hammering a full budget
 * cannot flood the journal. */
static int rate_ok(void)
{
	static time_t window;
	static int count;
	time_t now = time(NULL);

	if (now != window) {
		window = now;
		count = 0;
	}
	return ++count <= 20;
}

void mb_log_event(int priority, const char *message_id, int pid, unsigned uid, int level,
		  unsigned long long bytes, unsigned hresult, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (priority > max_priority || !rate_ok())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (journal_prefix < 0)
		journal_prefix = getenv("JOURNAL_STREAM") != NULL;
	if (journal_prefix &&
	    sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", priority, "MESSAGE_ID=%s", message_id,
			    "MEMBROKER_CLIENT_PID=%d", pid, "MEMBROKER_CLIENT_UID=%u", uid,
			    "MEMBROKER_LEVEL=%d", level, "MEMBROKER_BYTES=%llu", bytes,
			    "MEMBROKER_HRESULT=0x%08X", hresult, "SYSLOG_IDENTIFIER=membrokerd",
			    NULL) >= 0)
		return;
	mb_log(priority, "%s [pid=%d uid=%u level=%d bytes=%llu hresult=0x%08X]", msg, pid, uid,
	       level, bytes, hresult);
}
