#!/bin/sh
# Golden capture for tests/ipvs_golden.rs: ipvsadm (libnl) talking to the
# Debian 6.1 kernel, traced with strace. Run as root in the test VM (it was
# run with the temporary `vm-run-proto capture.sh`, whose working directory is
# a results folder shared with the host), then on the host:
#   tests/golden/strace2hex.py 0x20 rep_list.txt req_*.txt
# (0x20: the IPVS family id the controller answered in the traces.)
set -x
ip link add d0 type dummy; ip link set d0 up
ip addr add 10.0.0.1/32 dev d0
ip addr add 10.0.1.1/32 dev d0
ip -6 addr add fd00::1/128 dev d0 nodad
ip -6 addr add fd00::11/128 dev d0 nodad
T="strace -f -xx -s 65536 -e trace=sendmsg,recvmsg,sendto,recvfrom"
$T -o req_svc4.txt ipvsadm -A -t 10.0.0.1:443 -s rr
$T -o req_dst4.txt ipvsadm -a -t 10.0.0.1:443 -r 10.0.1.1:6443 -m -w 3
$T -o req_dst4b.txt ipvsadm -a -t 10.0.0.1:443 -r 10.0.2.2:6443 -m -w 0 -x 100 -y 10
$T -o req_svc6.txt ipvsadm -A -t [fd00::1]:443 -s wrr -p 300
$T -o req_dst6.txt ipvsadm -a -t [fd00::1]:443 -r [fd00::11]:6443 -m -w 2
$T -o req_svc4u.txt ipvsadm -A -u 10.0.0.1:53 -s lc
$T -o req_edit_dst4.txt ipvsadm -e -t 10.0.0.1:443 -r 10.0.2.2:6443 -m -w 5
$T -o req_del_dst4.txt ipvsadm -d -t 10.0.0.1:443 -r 10.0.2.2:6443
$T -o req_edit_svc4.txt ipvsadm -E -t 10.0.0.1:443 -s wlc
$T -o req_del_svc4u.txt ipvsadm -D -u 10.0.0.1:53
ipvsadm -a -t 10.0.0.1:443 -r 10.0.2.2:6443 -m -w 0 -x 100 -y 10
# traffic through the services
busybox nc -lk -p 6443 -s 10.0.1.1 -e /bin/echo hi >/dev/null 2>&1 &
busybox nc -lk -p 6443 -s fd00::11 -e /bin/echo hi >/dev/null 2>&1 &
sleep 1
for i in 1 2 3 4 5; do busybox nc -w 2 10.0.0.1 443 </dev/null; busybox nc -w 2 fd00::1 443 </dev/null; done
sleep 3
ipvsadm -Ln --stats --exact
ipvsadm -Ln --rate --exact
$T -o rep_list.txt ipvsadm -Ln --exact
$T -o rep_info.txt ipvsadm -Ln
ipvsadm -Ln --stats --exact
ls
