// Prints a Kafka broker's own counters, read over JMX (scripts/kafka.sh
// with KAFKA_JMX_PORT), one per line as "<kind> <name> <value>":
//   request <API> <count>    requests handled, by API (RequestMetrics)
//   topic <topic> <count>    records appended, by topic (MessagesInPerSec)
//   cpu process <ns>         the broker JVM's CPU time
// Run with the JDK's source launcher, no build step:
//   java scripts/KafkaMetrics.java 127.0.0.1:PORT
// Benchmarks difference two readings to get requests and records per order.
import java.util.Map;
import java.util.TreeMap;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class KafkaMetrics {
    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: java KafkaMetrics.java HOST:PORT");
            System.exit(2);
        }
        JMXServiceURL url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://" + args[0] + "/jmxrmi");
        try (JMXConnector c = JMXConnectorFactory.connect(url)) {
            MBeanServerConnection m = c.getMBeanServerConnection();
            // RequestsPerSec has one MBean per API and version: sum the versions.
            Map<String, Long> requests = new TreeMap<>();
            for (ObjectName n : m.queryNames(new ObjectName("kafka.network:type=RequestMetrics,name=RequestsPerSec,*"), null)) {
                requests.merge(n.getKeyProperty("request"), (Long) m.getAttribute(n, "Count"), Long::sum);
            }
            requests.forEach((k, v) -> System.out.println("request " + k + " " + v));
            for (ObjectName n : m.queryNames(new ObjectName("kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=*"), null)) {
                System.out.println("topic " + n.getKeyProperty("topic") + " " + m.getAttribute(n, "Count"));
            }
            Object cpu = m.getAttribute(new ObjectName("java.lang:type=OperatingSystem"), "ProcessCpuTime");
            System.out.println("cpu process " + cpu);
        }
    }
}
