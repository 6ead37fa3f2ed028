// tests/bench/go/sched_bench.go -- the Go twins of tests/bench/sched_bench.c, run side by
// side by tests/bench/run.sh when `go` is installed. Same arguments, same output lines.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func spawn(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	fmt.Printf("spawn %.1f ns\n", float64(time.Since(t0).Nanoseconds())/float64(n))
}

func skynet(c chan int, num, size int) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int)
	sz := size / 10
	for i := 0; i < 10; i++ {
		go skynet(rc, num+i*sz, sz)
	}
	sum := 0
	for i := 0; i < 10; i++ {
		sum += <-rc
	}
	c <- sum
}

func skynetMain(n int) {
	c := make(chan int)
	t0 := time.Now()
	go skynet(c, 0, n)
	sum := <-c
	if sum != n*(n-1)/2 {
		panic("skynet: wrong sum")
	}
	fmt.Printf("skynet %.1f ms\n", float64(time.Since(t0).Nanoseconds())/1e6)
}

func yield(n int) {
	runtime.GOMAXPROCS(1)
	var wg sync.WaitGroup
	wg.Add(4)
	t0 := time.Now()
	for i := 0; i < 4; i++ {
		go func() {
			for k := 0; k < n; k++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	fmt.Printf("yield %.1f ns\n", float64(time.Since(t0).Nanoseconds())/float64(4*n))
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var pages, res int64
	fmt.Sscan(string(b), &pages, &res)
	return res * int64(os.Getpagesize())
}

func parked(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	block := make(chan struct{})
	before := rss()
	for i := 0; i < n; i++ {
		go func() {
			wg.Done()
			<-block
		}()
	}
	wg.Wait()
	after := rss()
	fmt.Printf("parked %.0f bytes\n", float64(after-before)/float64(n))
}

func pingpong(n int) {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	fmt.Printf("pingpong %.1f ns\n", float64(time.Since(t0).Nanoseconds())/float64(n))
	close(ping)
}

func chanbuf(n int) {
	c := make(chan int, 128)
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			c <- i
		}
		close(c)
	}()
	k := 0
	for range c {
		k++
	}
	fmt.Printf("chanbuf %.1f ns\n", float64(time.Since(t0).Nanoseconds())/float64(k))
}

func mutex(n int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	count := 0
	wg.Add(8)
	t0 := time.Now()
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < n; i++ {
				mu.Lock()
				count++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	if count != 8*n {
		panic("mutex: wrong count")
	}
	fmt.Printf("mutex %.1f ns\n", float64(time.Since(t0).Nanoseconds())/float64(8*n))
}

func cpuNs() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func sleeps(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	t0, c0 := time.Now(), cpuNs()
	for i := 0; i < n; i++ {
		go func() {
			for k := 0; k < 10; k++ {
				time.Sleep(10 * time.Millisecond)
			}
			wg.Done()
		}()
	}
	wg.Wait()
	fmt.Printf("sleep %.1f ms wall, %.0f ns cpu per sleep\n", float64(time.Since(t0).Nanoseconds())/1e6,
		float64(cpuNs()-c0)/float64(10*n))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sched_bench spawn|skynet|yield|parked [N]")
		os.Exit(2)
	}
	n := 0
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	if p := os.Getenv("WEFT_MAXPROCS"); p != "" {
		if v, err := strconv.Atoi(p); err == nil {
			runtime.GOMAXPROCS(v)
		}
	}
	switch os.Args[1] {
	case "spawn":
		if n == 0 {
			n = 1000000
		}
		spawn(n)
	case "skynet":
		if n == 0 {
			n = 1000000
		}
		skynetMain(n)
	case "yield":
		if n == 0 {
			n = 2000000
		}
		yield(n)
	case "parked":
		if n == 0 {
			n = 1000000
		}
		parked(n)
	case "pingpong":
		if n == 0 {
			n = 1000000
		}
		pingpong(n)
	case "chanbuf":
		if n == 0 {
			n = 5000000
		}
		chanbuf(n)
	case "mutex":
		if n == 0 {
			n = 500000
		}
		mutex(n)
	case "sleep":
		if n == 0 {
			n = 100000
		}
		sleeps(n)
	default:
		fmt.Fprintln(os.Stderr, "unknown benchmark")
		os.Exit(2)
	}
}
