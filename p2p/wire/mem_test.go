package wire

import "runtime"

type testingMem struct{ bytes uint64 }

func (m *testingMem) measure(f func()) {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	m.bytes = b.TotalAlloc - a.TotalAlloc
}
