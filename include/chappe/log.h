/* log.h -- diagnostic log (stderr) and the JSON access log. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_LOG_H
#define CHAPPE_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warn", "info", "debug". 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);

/* One line on stderr: `2026-11-26T12:00:00.123Z level message`. Thread-safe (one write). */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_DEBUG)                                                          \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)

/*
 * Access log destination: "-" for stdout, "off", or a file path (opened
 * O_APPEND). Called at start-up; 0 or CH_EIO.
 */
int log_access_open(const char *dest);
/* Write one access-log line (a JSON object, without the newline). One write(2). */
void log_access(const char *line, size_t len);
void log_access_close(void);

#endif
