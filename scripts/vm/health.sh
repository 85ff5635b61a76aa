# Checks of the test VM kernel's health around a run (the suite, the
# fuzzer). Sourced by scripts that define `result NAME STATUS [REASON]`.
#
#   health_begin          remember where the kernel log starts; forget leaks
#                         reported before
#   health_check_leaks    no kmemleak report since health_begin
#   health_check_log      no warning, BUG, oops, lockdep, KASAN, RCU stall or
#                         soft lockup logged since health_begin

KMEMLEAK=/sys/kernel/debug/kmemleak

health_begin() {
	dmesg > /tmp/dmesg.before
	[ -w $KMEMLEAK ] && echo clear > $KMEMLEAK
	return 0
}

health_check_leaks() {
	if [ ! -w $KMEMLEAK ]; then
		result "kernel:no_kmemleak_reports" 4 "kmemleak is not available in this kernel"
		return
	fi
	# kmemleak only reports objects older than 5 s: wait, then scan twice.
	sleep 6
	echo scan > $KMEMLEAK
	sleep 1
	echo scan > $KMEMLEAK
	cat $KMEMLEAK > /tmp/leaks
	if [ -s /tmp/leaks ]; then
		sed 's/^/# /' /tmp/leaks | head -n 200
		result "kernel:no_kmemleak_reports" 1 "kmemleak found unreferenced objects"
	else
		result "kernel:no_kmemleak_reports" 0
	fi
}

health_check_log() {
	dmesg > /tmp/dmesg.after
	before=$(wc -l < /tmp/dmesg.before)
	tail -n +$((before + 1)) /tmp/dmesg.after > /tmp/dmesg.run
	pattern='WARNING:|BUG:|Oops|general protection|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU|sleeping function called from invalid context|unreferenced object|KASAN:|UBSAN:|Call Trace:|detected stalls|soft lockup|hung_task|blocked for more than'
	if grep -Eq "$pattern" /tmp/dmesg.run; then
		grep -E -A 30 "$pattern" /tmp/dmesg.run | head -n 120 | sed 's/^/# /'
		result "kernel:log_clean" 1 "the kernel logged a warning"
	else
		result "kernel:log_clean" 0
	fi
}
