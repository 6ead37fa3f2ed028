// tests/bench/go/httpd.go -- Go's net/http, a baseline of tests/bench/section_http.sh
// (the twin of demos/httpd.c). run.sh's http section runs it with GOMAXPROCS=1 and =2.
//
//	httpd PORT ROOT
//
// Listens on 127.0.0.1:PORT. GET / answers "hello, world\n" (text/plain); any other path
// is a file under ROOT through http.FileServer (which sends files with sendfile(2) on
// Linux, as httpd does). Keep-alive and pipelining are net/http's own. Prints nothing
// but errors.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: httpd PORT ROOT")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil || port <= 0 || port > 65535 {
		fmt.Fprintln(os.Stderr, "usage: httpd PORT ROOT")
		os.Exit(2)
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	hello := []byte("hello, world\n")
	files := http.FileServer(http.Dir(os.Args[2]))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", "13")
			w.Write(hello)
			return
		}
		files.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Args[1], Handler: handler}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
}
