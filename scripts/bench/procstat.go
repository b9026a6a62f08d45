package main

import (
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// The same two measurements as peer.py's, read the same way from /proc so that the sides compare.

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux ABI Go runs on.
const clockTicks = 100

// processStart is the fallback origin when /proc cannot be read: package initialization, a few ms after exec.
var processStart = time.Now()

// sinceProcessStart is the wall time since this process was started (fork), from /proc/self/stat's starttime and
// /proc/uptime (both since boot, 10 ms resolution): it includes exec, runtime start-up and, for the peer, Python's
// imports.
func sinceProcessStart() float64 {
	stat, err1 := os.ReadFile("/proc/self/stat")
	up, err2 := os.ReadFile("/proc/uptime")
	if err1 != nil || err2 != nil {
		return time.Since(processStart).Seconds()
	}
	// Field 2 (comm) is parenthesized and may hold spaces: count from the last ')'; starttime is field 22.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	fields := strings.Fields(rest) // fields[0] is field 3
	upFields := strings.Fields(string(up))
	if len(fields) < 20 || len(upFields) == 0 {
		return time.Since(processStart).Seconds()
	}
	start, err1 := strconv.ParseFloat(fields[19], 64)
	uptime, err2 := strconv.ParseFloat(upFields[0], 64)
	if err1 != nil || err2 != nil {
		return time.Since(processStart).Seconds()
	}
	return uptime - start/clockTicks
}

// vmHWMGB is the process's peak resident set, VmHWM of /proc/self/status, in GB (10⁹ bytes); NaN if unreadable.
func vmHWMGB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					return kb * 1024 / 1e9
				}
			}
		}
	}
	return math.NaN()
}
