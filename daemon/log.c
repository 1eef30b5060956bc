/*
 * log.c: stderr logging with journal priority prefixes.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	} levels[] = {{"debug", LOG_DEBUG},     {"info", LOG_INFO},   {"notice", LOG_NOTICE},
		      {"warning", LOG_WARNING}, {"error", LOG_ERR}};
	for (unsigned i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (name != NULL && strcmp(name, levels[i].name) == 0)
			return levels[i].prio;
	return -1;
}

void mb_log(int priority, const char *fmt, ...)
{
	static const char *const names[] = {"emergency", "alert",  "critical", "error",
					    "warning",   "notice", "info",     "debug"};
	char line[1024];
	va_list ap;

	if (priority > max_priority)
		return;
	/* journald sets JOURNAL_STREAM for the stderr it captures; only then is "<N>" understood. */
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
