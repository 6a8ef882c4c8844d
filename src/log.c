/* log.c -- diagnostic lines on stderr and one JSON access-log line per request. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chappe/log.h"
#include "chappe/util.h"

static enum log_level level = LOG_INFO;
static int access_fd = -1;
static int access_owned;

static const char *names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level l)
{
    level = l;
}

enum log_level log_get_level(void)
{
    return level;
}

int log_parse_level(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level l)
{
    return (unsigned)l < ARRAY_LEN(names) ? names[l] : "?";
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void log_msg(enum log_level l, const char *fmt, ...)
{
    if (l > level)
        return;
    char line[2048];
    uint64_t ms = util_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (unsigned)(ms % 1000), log_level_name(l));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    write_all(STDERR_FILENO, line, len);
}

int log_access_open(const char *dest)
{
    log_access_close();
    if (dest == NULL || strcmp(dest, "off") == 0)
        return 0;
    if (strcmp(dest, "-") == 0) {
        access_fd = STDOUT_FILENO;
        return 0;
    }
    int fd = open(dest, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return CH_EIO;
    access_fd = fd;
    access_owned = 1;
    return 0;
}

void log_access(const char *p, size_t n)
{
    if (access_fd < 0)
        return;
    char stack[4096];
    if (n + 1 <= sizeof(stack)) {
        memcpy(stack, p, n);
        stack[n] = '\n';
        write_all(access_fd, stack, n + 1);
    } else {
        write_all(access_fd, p, n);
        write_all(access_fd, "\n", 1);
    }
}

void log_access_close(void)
{
    if (access_owned && access_fd >= 0)
        close(access_fd);
    access_fd = -1;
    access_owned = 0;
}
