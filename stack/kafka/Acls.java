// Creates Kafka's ACLs through the controller, idempotently: `make run` starts it as
// `java -cp LIBS/* Acls.java` and writes its orders to stdin (not as arguments: `ps` shows those, and
// the orders hold the admin's password). aiokafka cannot do this: its ACL requests are versions that
// Kafka 4 no longer takes. Orders, one per line:
//   config <admin client property>=<value>
//   acl <user> <TOPIC|GROUP|TRANSACTIONAL_ID|CLUSTER> <name> <operation>   allow, literal name, any host
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Acls {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        List<AclBinding> acls = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            String[] words = line.split(" ", 2);
            if (words[0].equals("config")) {
                String[] pair = words[1].split("=", 2);
                config.put(pair[0], pair[1]);
            } else if (words[0].equals("acl")) {
                String[] acl = words[1].split(" ");
                acls.add(new AclBinding(
                        new ResourcePattern(ResourceType.valueOf(acl[1]), acl[2], PatternType.LITERAL),
                        new AccessControlEntry("User:" + acl[0], "*", AclOperation.valueOf(acl[3]),
                                AclPermissionType.ALLOW)));
            } else if (!line.isBlank()) {
                throw new IllegalArgumentException("unknown order: " + words[0]);
            }
        }
        try (Admin admin = Admin.create(config)) {
            admin.createAcls(acls).all().get();
        }
        System.out.println(acls.size() + " ACLs in place");
    }
}
