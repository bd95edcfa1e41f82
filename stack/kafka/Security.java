// Creates Kafka's SCRAM users and ACLs, idempotently: `make run` starts it as
// `java -cp LIBS/* Security.java` and writes its orders to stdin (not as arguments: `ps` shows those,
// and the orders hold passwords). aiokafka cannot do this: it has no SCRAM admin calls, and its ACL
// requests are versions that Kafka 4 no longer takes. Orders, one per line:
//   config <admin client property>=<value>
//   user <name> <password>                      SCRAM-SHA-512 credentials, created or replaced
//   acl <user> <TOPIC|GROUP|TRANSACTIONAL_ID|CLUSTER> <name> <operation>   allow, literal name, any host
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Security {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        List<UserScramCredentialAlteration> users = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            String[] words = line.split(" ", 2);
            if (words[0].equals("config")) {
                String[] pair = words[1].split("=", 2);
                config.put(pair[0], pair[1]);
            } else if (words[0].equals("user")) {
                String[] user = words[1].split(" ", 2);
                users.add(new UserScramCredentialUpsertion(
                        user[0], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), user[1]));
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
            if (!users.isEmpty()) {
                admin.alterUserScramCredentials(users).all().get();
            }
            if (!acls.isEmpty()) {
                admin.createAcls(acls).all().get();
            }
        }
        System.out.println(users.size() + " users, " + acls.size() + " ACLs in place");
    }
}
