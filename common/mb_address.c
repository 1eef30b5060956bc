/*
 * mb_address.c: broker address resolution and the companion fd socket's name.
 */
#include "mb_address.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "membroker.h"

#define IPC_PREFIX	"ipc://"
#define ABSTRACT_PREFIX "abstract://"

static int valid_url(const char *url)
{
	if (strncmp(url, IPC_PREFIX, strlen(IPC_PREFIX)) == 0)
		return url[strlen(IPC_PREFIX)] != '\0';
	if (strncmp(url, ABSTRACT_PREFIX, strlen(ABSTRACT_PREFIX)) == 0)
		return url[strlen(ABSTRACT_PREFIX)] != '\0';
	return 0;
}

int mb_address_resolve(const char *given, char *buf, size_t len)
{
	const char *env = getenv(MB_ADDRESS_ENV);
	int n;

	if (buf == NULL || len == 0)
		return -EINVAL;
	if (given != NULL) {
		n = snprintf(buf, len, "%s", given);
	} else if (env != NULL && env[0] != '\0') {
		n = snprintf(buf, len, "%s", env);
	} else {
		n = snprintf(buf, len, "%s", MB_DEFAULT_ADDRESS);
	}
	if (n < 0 || (size_t)n >= len || !valid_url(buf))
		return -EINVAL;
	return 0;
}

const char *mb_address_ipc_path(const char *url)
{
	if (url == NULL || strncmp(url, IPC_PREFIX, strlen(IPC_PREFIX)) != 0)
		return NULL;
	return url + strlen(IPC_PREFIX);
}

int mb_address_fd_socket(const char *url, struct sockaddr_un *sun, socklen_t *sun_len)
{
	const char *path = mb_address_ipc_path(url);
	size_t n;

	if (url == NULL || sun == NULL || sun_len == NULL)
		return -EINVAL;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (path != NULL) {
		n = (size_t)snprintf(sun->sun_path, sizeof(sun->sun_path), "%s.fd", path);
		if (path[0] == '\0' || n >= sizeof(sun->sun_path))
			return -EINVAL;
		*sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		return 0;
	}
	if (strncmp(url, ABSTRACT_PREFIX, strlen(ABSTRACT_PREFIX)) == 0) {
		const char *name = url + strlen(ABSTRACT_PREFIX);
		/* Abstract names start with a NUL byte and are not NUL-terminated. */
		n = (size_t)snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1, "%s.fd", name);
		if (name[0] == '\0' || n >= sizeof(sun->sun_path) - 1)
			return -EINVAL;
		*sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
		return 0;
	}
	return -EINVAL;
}
