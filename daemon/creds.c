/*
 * creds.c: supplementary groups from /proc.
 */
#include "creds.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mb_proc_groups(pid_t pid, uid_t uid, gid_t *groups, int max)
{
	char path[64], line[4096];
	bool uid_ok = false;
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "Uid:", 4) == 0) {
			unsigned ruid, euid;
			uid_ok = sscanf(line + 4, "%u %u", &ruid, &euid) == 2 && ruid == uid &&
				 euid == uid;
		} else if (strncmp(line, "Groups:", 7) == 0) {
			char *p = line + 7, *end;
			for (;;) {
				unsigned long g = strtoul(p, &end, 10);
				if (end == p || n >= max)
					break;
				groups[n++] = (gid_t)g;
				p = end;
			}
		}
	}
	fclose(f);
	return uid_ok ? n : -1;
}

int mb_pipe_peer(nng_pipe p, pid_t *pid, uid_t *uid, gid_t *gid)
{
	uint64_t v_pid = 0, v_uid = 0, v_gid = 0;
	int rv;

	if ((rv = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &v_pid)) != 0 ||
	    (rv = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &v_uid)) != 0 ||
	    (rv = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_GID, &v_gid)) != 0)
		return rv;
	*pid = (pid_t)v_pid;
	*uid = (uid_t)v_uid;
	*gid = (gid_t)v_gid;
	return 0;
}
