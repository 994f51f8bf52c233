import socket, subprocess, sys
groups = 0
for g in (1,5,7,9,11): groups |= 1 << (g-1)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.bind((0, groups))
s.setblocking(False)
def ip(*a): subprocess.run(["ip", *a], check=True)
def drain(label):
    out=[]
    while True:
        try: out.append(s.recv(65536))
        except BlockingIOError: break
    for d in out:
        ty = int.from_bytes(d[4:6],'little')
        print(f"{label} type={ty} len={len(d)}")
        print(d.hex())
ip("link","set","lo","up"); drain("lo_up")
ip("addr","add","10.96.0.1/32","dev","lo"); drain("addr_add_v4")
ip("addr","del","10.96.0.1/32","dev","lo"); drain("addr_del_v4")
ip("addr","add","192.0.2.10/32","dev","lo"); drain("node_addr")
ip("route","add","10.96.0.1/32","dev","lo","src","192.0.2.10"); drain("route_add")
ip("route","del","10.96.0.1/32","dev","lo"); drain("route_del")
ip("-6","addr","add","fd00:96::1/128","dev","lo"); drain("addr_add_v6")
ip("link","add","mon0","type","veth","peer","name","mon1"); ip("link","set","mon0","up"); drain("veth_setup")
ip("link","set","mon0","down"); drain("link_down")
ip("link","del","mon0"); drain("link_del")
