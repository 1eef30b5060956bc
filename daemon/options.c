/*
 * options.c: command-line parsing.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "throttle.h"
#include "log.h"
#include "membroker.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: membrokerd [OPTIONS]\n"
	    "Memory allocation broker: owns one memory budget and hands it to clients by critical "
	    "level.\n\n"
	    "  -l, --listen URL      nng address to serve (ipc:///path or abstract://name);\n"
	    "                        default $MEMBROKER_ADDRESS, else the system broker's\n"
	    "                        " MB_DEFAULT_ADDRESS "\n"
	    "  -c, --config PATH     configuration file (default " MB_DEFAULT_CONFIG ",\n"
	    "                        used if present); options given here take precedence\n"
	    "  -b, --budget SIZE     memory budget: bytes with K/M/G/T suffix, or N%% of the "
	    "memory\n"
	    "                        available to the daemon; default 50%%\n"
	    "      --log-level LVL   debug, info, notice, warning or error (default info)\n"
	    "      --ceilings T,A,P  share of the budget commits at task, AppDomain and process\n"
	    "                        level may bring the total to, in percent (default 90,97,100)\n"
	    "      --waits T,A,P     how long a commit at each level waits for memory, in ms\n"
	    "                        (default 0,250,2000)\n"
	    "      --audit-interval MS  how often sections are checked against commits (100)\n"
	    "      --contexts N      requests handled concurrently (default 64)\n"
	    "      --commit-credit SIZE  memory a client may commit without asking, granted\n"
	    "                        ahead and taken back under pressure (default 4M; 0: off)\n"
	    "      --offender-refusal MS  how long the uid of a process disconnected for writing\n"
	    "                        memory it had not committed is refused new sessions the\n"
	    "                        first time, doubled at each repeat (default 5000)\n"
	    "  -h, --help            show this help\n"
	    "  -V, --version         show the version\n");
}

int mb_options_parse(int argc, char **argv, mb_options *o)
{
	enum {
		OPT_LOG_LEVEL = 256,
		OPT_CONTEXTS,
		OPT_CEILINGS,
		OPT_WAITS,
		OPT_AUDIT,
		OPT_CREDIT,
		OPT_REFUSAL
	};
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"budget", required_argument, NULL, 'b'},
	    {"config", required_argument, NULL, 'c'},
	    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	    {"contexts", required_argument, NULL, OPT_CONTEXTS},
	    {"ceilings", required_argument, NULL, OPT_CEILINGS},
	    {"waits", required_argument, NULL, OPT_WAITS},
	    {"audit-interval", required_argument, NULL, OPT_AUDIT},
	    {"commit-credit", required_argument, NULL, OPT_CREDIT},
	    {"offender-refusal", required_argument, NULL, OPT_REFUSAL},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->log_level = -1;
	o->contexts = 64;
	optind = 0; /* 0, not 1: makes glibc restart its scan, so the parser can run twice */
	while ((c = getopt_long(argc, argv, "l:b:c:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			o->listen = optarg;
			break;
		case 'b':
			o->budget = optarg;
			break;
		case 'c':
			o->config = optarg;
			break;
		case OPT_LOG_LEVEL:
			o->log_level = mb_log_parse_level(optarg);
			if (o->log_level < 0) {
				fprintf(stderr, "membrokerd: unknown log level '%s'\n", optarg);
				return -1;
			}
			break;
		case OPT_CONTEXTS: {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end != '\0' || n < 2 || n > 4096) {
				fprintf(stderr, "membrokerd: --contexts wants 2..4096\n");
				return -1;
			}
			o->contexts = (int)n;
			break;
		}
		case OPT_CEILINGS:
			if (mb_parse_triple(optarg, true, o->ceiling_permille) != 0) {
				fprintf(stderr, "membrokerd: --ceilings wants three non-decreasing "
						"percentages, e.g. 90,97,100\n");
				return -1;
			}
			o->ceilings_set = true;
			break;
		case OPT_WAITS:
			if (mb_parse_triple(optarg, false, o->wait_ms) != 0) {
				fprintf(stderr, "membrokerd: --waits wants three times in ms, e.g. "
						"0,250,2000\n");
				return -1;
			}
			o->waits_set = true;
			break;
		case OPT_AUDIT: {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end != '\0' || n < 10 || n > 3600000) {
				fprintf(stderr,
					"membrokerd: --audit-interval wants 10..3600000 ms\n");
				return -1;
			}
			o->audit_ms = (uint32_t)n;
			break;
		}
		case OPT_CREDIT: {
			if (mb_parse_size(optarg, 0, &o->commit_credit) != 0 ||
			    o->commit_credit > MB_MAX_COMMIT_CREDIT) {
				fprintf(stderr, "membrokerd: --commit-credit wants a size up to 1G "
						"(0 turns credit off)\n");
				return -1;
			}
			o->commit_credit_set = true;
			break;
		}
		case OPT_REFUSAL: {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end != '\0' || n < 1000 || n > MB_THROTTLE_MAX_MS) {
				fprintf(stderr,
					"membrokerd: --offender-refusal wants 1000..300000 ms\n");
				return -1;
			}
			o->offender_refusal_ms = (uint32_t)n;
			break;
		}
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf("membrokerd %d.%d.%d (protocol %d)\n", MB_VERSION_MAJOR,
			       MB_VERSION_MINOR, MB_VERSION_PATCH, MB_PROTOCOL_VERSION);
			return 1;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "membrokerd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	return 0;
}
