package checkpoints

import (
	"os"
	"syscall"
)

// sysStamp returns a file's inode, device and status change time (ns).
func sysStamp(info os.FileInfo) (inode, device uint64, ctime int64) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0
	}
	return st.Ino, uint64(st.Dev), st.Ctimespec.Nano()
}
